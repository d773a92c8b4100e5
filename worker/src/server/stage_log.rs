//! Per-stage log files: `<state dir>/logs/<run>/<stage>.log`, written while
//! a stage job runs and read back by offset by the log endpoint.
//!
//! A `tracing` layer copies every event emitted inside a `stage` span (the
//! span `stage::record_stage` and the job open, with fields `run` and
//! `stage`) into that stage's file, when a job has opened one for it. A
//! stage run from the CLI has no open file, so the layer does nothing
//! there. File names are built from the parsed run id and `Stage` only,
//! never from request text. A re-run appends to the file, so offsets a
//! client already holds stay valid.

use crate::stage::Stage;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

type Sink = Arc<Mutex<File>>;

/// Open stage logs by `(run, stage name)`.
static SINKS: LazyLock<Mutex<HashMap<(i64, String), Sink>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The log file of `stage` of `run` under `logs_dir`.
pub fn path(logs_dir: &Path, run: i64, stage: Stage) -> PathBuf {
    logs_dir.join(run.to_string()).join(format!("{stage}.log"))
}

/// An open stage log; events of the stage go to it until it is dropped.
pub struct StageLog {
    key: (i64, String),
    sink: Sink,
}

impl StageLog {
    /// Opens (appending) the log of `stage` of `run` and routes the stage's
    /// events to it.
    pub fn open(logs_dir: &Path, run: i64, stage: Stage) -> std::io::Result<StageLog> {
        let path = path(logs_dir, run, stage);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let sink = Arc::new(Mutex::new(file));
        let key = (run, stage.as_str().to_owned());
        lock(&SINKS).insert(key.clone(), sink.clone());
        Ok(StageLog { key, sink })
    }

    /// Writes one line as it is (for output that is not a tracing event,
    /// such as a build log copied in).
    pub fn line(&self, text: &str) {
        write_line(&self.sink, text);
    }
}

impl Drop for StageLog {
    fn drop(&mut self) {
        lock(&SINKS).remove(&self.key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves the data usable (a map of
    // files, a file): poisoning is not a reason to stop logging.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn write_line(sink: &Sink, text: &str) {
    let mut file = lock(sink);
    let _ = file.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = file.write_all(b"\n");
    }
}

/// A chunk of a log read from an offset.
pub struct Chunk {
    pub bytes: Vec<u8>,
    pub next_offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset {offset} is past the end of the log ({size} bytes)")]
    PastEnd { offset: u64, size: u64 },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads at most `max` bytes of `path` from `offset`. A log that does not
/// exist yet reads as empty.
pub fn read_chunk(path: &Path, offset: u64, max: usize) -> Result<Chunk, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if offset > 0 {
                return Err(ReadError::PastEnd { offset, size: 0 });
            }
            return Ok(Chunk {
                bytes: Vec::new(),
                next_offset: 0,
            });
        }
        Err(e) => return Err(io(e)),
    };
    let size = file.metadata().map_err(io)?.len();
    if offset > size {
        return Err(ReadError::PastEnd { offset, size });
    }
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut bytes = Vec::with_capacity(max.min((size - offset) as usize));
    file.take(max as u64).read_to_end(&mut bytes).map_err(io)?;
    Ok(Chunk {
        next_offset: offset + bytes.len() as u64,
        bytes,
    })
}

/// The size of a log (0 when it does not exist).
pub fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The `(run, stage)` a `stage` span is about.
struct StageKey(i64, String);

#[derive(Default)]
struct KeyVisitor {
    run: Option<i64>,
    stage: Option<String>,
}

impl Visit for KeyVisitor {
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "run" {
            self.run = Some(value);
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "run" {
            self.run = i64::try_from(value).ok();
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "stage" {
            self.stage = Some(value.to_owned());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "stage" {
            self.stage = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
}

/// Formats an event as one log line: time, level, message and fields.
#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: String,
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields
                .push_str(&format!(" {}={value:?}", field.name()));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message.push_str(&format!("{value:?}"));
        } else {
            self.fields
                .push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

struct StageLogLayer;

impl<S> Layer<S> for StageLogLayer
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        if attrs.metadata().name() != "stage" {
            return;
        }
        let mut keys = KeyVisitor::default();
        attrs.record(&mut keys);
        if let (Some(run), Some(stage), Some(span)) = (keys.run, keys.stage, ctx.span(id)) {
            span.extensions_mut().insert(StageKey(run, stage));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let sink = scope.into_iter().find_map(|span| {
            let ext = span.extensions();
            let key = ext.get::<StageKey>()?;
            lock(&SINKS).get(&(key.0, key.1.clone())).cloned()
        });
        let Some(sink) = sink else {
            return;
        };
        let mut line = LineVisitor::default();
        event.record(&mut line);
        let meta = event.metadata();
        let time = chrono::Utc::now().format("%H:%M:%S");
        write_line(
            &sink,
            &format!("{time} {:<5} {}{}", meta.level(), line.message, line.fields),
        );
    }
}

/// The layer to install next to the terminal one (it sees INFO and above).
pub fn layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    StageLogLayer.with_filter(LevelFilter::INFO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn events_inside_a_stage_span_reach_its_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            let log = StageLog::open(dir.path(), 7, Stage::Apply).unwrap();
            tracing::info!("outside any stage");
            {
                let _s = tracing::info_span!("stage", run = 7i64, stage = "apply").entered();
                let _inner = tracing::info_span!("series", key = "k").entered();
                tracing::info!(patches = 3, "applied");
                tracing::debug!("too detailed");
            }
            {
                let _s = tracing::info_span!("stage", run = 8i64, stage = "apply").entered();
                tracing::info!("another run");
            }
            log.line("copied line");
        });
        let text = std::fs::read_to_string(path(dir.path(), 7, Stage::Apply)).unwrap();
        assert!(text.contains("INFO  applied patches=3"), "{text}");
        assert!(text.ends_with("copied line\n"), "{text}");
        for absent in ["outside", "too detailed", "another run"] {
            assert!(!text.contains(absent), "{text}");
        }
    }

    #[test]
    fn chunks_by_offset() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.log");
        let missing = read_chunk(&file, 0, 10).unwrap();
        assert_eq!((missing.bytes.len(), missing.next_offset), (0, 0));
        std::fs::write(&file, "0123456789abc").unwrap();
        let a = read_chunk(&file, 0, 10).unwrap();
        assert_eq!(
            (a.bytes.as_slice(), a.next_offset),
            (&b"0123456789"[..], 10)
        );
        let b = read_chunk(&file, a.next_offset, 10).unwrap();
        assert_eq!((b.bytes.as_slice(), b.next_offset), (&b"abc"[..], 13));
        let end = read_chunk(&file, 13, 10).unwrap();
        assert!(end.bytes.is_empty());
        assert!(matches!(
            read_chunk(&file, 14, 10),
            Err(ReadError::PastEnd {
                offset: 14,
                size: 13
            })
        ));
    }
}
