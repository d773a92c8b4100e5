//! The `patchline` binary: parse arguments, run, map failures to exit codes.

use clap::Parser;
use std::process::ExitCode;

// mimalloc: a series keeps thousands of objects and line vectors alive; the
// system allocator spent a fifth of `patchline am` in malloc, realloc and
// fresh-page faults (docs/decisions.md). Built without transparent huge
// pages (`no_thp`): every first touch of one zeroes 2 MiB, which on a series
// of large files took half of `patchline am`'s time and a third of its peak
// RSS (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = patchline::cli::Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PATCHLINE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // The terminal gets what the filter allows; stage jobs of `serve`
    // also copy their events into per-stage log files.
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // Colours only for a person at a terminal (never in a pipe, a log
    // file or Jenkins' console, never with NO_COLOR set).
    let ansi = patchline::cli::stderr_colours();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                // Written above a live progress line, never through it.
                .with_writer(|| patchline::cli::LogWriter)
                .with_ansi(ansi)
                .with_filter(filter),
        )
        .with(patchline::server::stage_log::layer())
        .init();
    match patchline::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("patchline: {}", failure.message);
            ExitCode::from(failure.exit.code())
        }
    }
}
