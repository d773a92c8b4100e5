//! `patchline-kojihub`: a Koji hub test double. XML-RPC at `/kojihub`
//! (multicall, `nil`, `i8`, fault structs, password sessions, rawUpload),
//! files at `/kojifiles` (the topurl), a real `rpmbuild` behind every
//! target, and `/control/...` to inject faults and read request counts.
//!
//! It prints `listening on http://ADDR` on stdout once it accepts
//! connections, so a test can start it on port 0 and read the address.

mod builder;
mod http;
mod hub;

use clap::Parser;
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "patchline-kojihub", about = "A Koji hub test double")]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: String,
    /// Root of the hub's files (uploads, task outputs, packages).
    #[arg(long)]
    root: PathBuf,
    /// Build targets, comma separated: NAME or NAME=DIST. Without DIST the
    /// build tag's dist is the one Fedora's and EPEL's names stand for
    /// (`f41-candidate` -> `.fc41`, `epel9-candidate` -> `.el9`, `el9` ->
    /// `.el9`), else `.<first word of NAME>`.
    #[arg(long, value_delimiter = ',', default_value = "el9,fc40")]
    targets: Vec<String>,
    /// Tasks stay FREE this long before they build.
    #[arg(long, default_value_t = 0)]
    build_delay_ms: u64,
    /// Every hub answer is delayed this long.
    #[arg(long, default_value_t = 0)]
    slow_ms: u64,
    /// The next N tasks fail (injected).
    #[arg(long, default_value_t = 0)]
    fail_tasks: u32,
    /// Every login is refused with an AuthError.
    #[arg(long)]
    refuse_login: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("patchline-kojihub: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut targets = Vec::new();
    for spec in &args.targets {
        let (name, dist) = match spec.split_once('=') {
            Some((n, d)) => (n.trim(), Some(d.trim())),
            None => (spec.trim(), None),
        };
        anyhow::ensure!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
            "target {spec:?}: letters, digits, '.', '_', '-' only"
        );
        targets.push(hub::Target::new(name, dist));
    }
    std::fs::create_dir_all(args.root.join("work"))
        .with_context(|| format!("cannot create {}", args.root.display()))?;
    let root = std::path::absolute(&args.root)?;
    let listener = std::net::TcpListener::bind(&args.bind)
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    let addr = listener.local_addr()?;
    let faults = hub::Faults {
        fail_tasks: args.fail_tasks,
        build_delay_ms: args.build_delay_ms,
        slow_ms: args.slow_ms,
        refuse_login: args.refuse_login,
        ..hub::Faults::default()
    };
    let hub = hub::Hub::new(root, targets, faults);
    let mut out = std::io::stdout();
    writeln!(out, "listening on http://{addr}")?;
    out.flush()?;
    http::serve(listener, hub);
    Ok(())
}
