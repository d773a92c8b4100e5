//! The Koji backend: every SRPM of the stage uploaded once, one `build`
//! task per target (scratch if configured), all tasks of the stage watched
//! together with one `multiCall` per polling round. A closed task's RPMs
//! are listed from its outputs (and its children's, as a real hub puts
//! them in `buildArch` subtasks), given by their topurl URLs and
//! downloaded next to the SRPM so publishing works as for local builds. A
//! failed task carries its fault and the tail of its `build.log` (or
//! `root.log`).
//!
//! It never retries a fault (the hub answered), and never prints the
//! password or the session key.

pub mod client;
pub mod profile;

use super::{Backend, Job, TargetResult};
use client::{Error, KojiClient};
use kojiwire::{Struct, TaskState, Value, ValueExt};
use profile::Resolved;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Why the Koji build of one target gave no RPMs (the build stage records
/// it as that target's error).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The upload of the SRPM (shared by the job's targets) or the `build`
    /// call failed.
    #[error("Koji build for {target} not started: {source}")]
    NotStarted {
        target: String,
        #[source]
        source: Arc<Error>,
    },
    #[error(
        "Koji build for {target} not started: the hub answered build() with {answer}, not a task id"
    )]
    NoTaskId { target: String, answer: String },
    #[error("Koji task {id} for {target} was canceled on the hub ({url})")]
    Canceled {
        id: i64,
        target: String,
        url: String,
    },
    #[error("Koji task {id} for {target} failed: {fault}{}", log_tail_or_url(log_tail.as_ref(), url))]
    Failed {
        id: i64,
        target: String,
        #[source]
        fault: Box<TaskFault>,
        /// The log read (`build.log` or `root.log`) and its last lines.
        log_tail: Option<(&'static str, String)>,
        /// The task's directory on the hub, named when no log was found.
        url: String,
    },
    #[error("Koji task for {target} closed but produced no binary RPM")]
    NoRpms { target: String },
}

fn log_tail_or_url(log_tail: Option<&(&'static str, String)>, url: &str) -> String {
    match log_tail {
        Some((log, tail)) => format!("; {log} tail: {tail}"),
        None => format!(" (no log found at {url})"),
    }
}

/// What the hub says about a failed task (`getTaskResult`).
#[derive(Debug, thiserror::Error)]
pub enum TaskFault {
    /// The task's fault, e.g. `BuildError: ...`.
    #[error("{name}: {message}")]
    Fault { name: &'static str, message: String },
    /// No fault came back.
    #[error("failed")]
    Unknown,
    /// Asking for the result failed itself.
    #[error(transparent)]
    Query(Error),
}

pub struct KojiBackend {
    settings: Resolved,
}

impl KojiBackend {
    pub fn new(settings: Resolved) -> Self {
        Self { settings }
    }
}

/// One submitted target build.
struct Submitted {
    job: usize,
    target: String,
    task: Result<i64, TargetError>,
    started: Instant,
}

const LOG_TAIL_BYTES: usize = 4096;

impl Backend for KojiBackend {
    fn build(
        &mut self,
        jobs: &[Job],
        events: &mut dyn super::BuildEvents,
    ) -> Result<Vec<Vec<TargetResult>>, super::Error> {
        let r = &self.settings;
        let mut client = KojiClient::new(r)?;
        client.login(r)?;
        let _span = tracing::info_span!("koji", server = %client.server()).entered();
        let mut submitted = Vec::new();
        for (j, job) in jobs.iter().enumerate() {
            let started = Instant::now();
            // Tasks an interrupted stage started for this SRPM are watched
            // again, not started twice.
            let known = |target: &str| {
                job.started
                    .iter()
                    .find(|(t, _)| t == target)
                    .map(|(_, task)| *task)
            };
            // A fresh directory per upload, as the koji CLI does, so a
            // retried stage never collides with an earlier upload.
            let dir = format!(
                "patchline/{}-{}",
                job.nvr,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            );
            let name = job
                .srpm
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let uploaded = if job.targets.iter().all(|t| known(&t.name).is_some()) {
                Ok(String::new())
            } else {
                match client.upload(&job.srpm, &dir) {
                    Ok(()) => Ok(format!("{dir}/{name}")),
                    Err(e) if e.is_unreachable() => return Err(e.into()),
                    Err(e) => Err(Arc::new(e)),
                }
            };
            // A Koji target is only its name: the hub takes the dist and
            // the platform's macros from the target's build tag.
            for target in job.targets.iter().map(|t| &t.name) {
                if let Some(task) = known(target) {
                    tracing::info!(task, repo = %job.repo, target = %target, "koji task taken up again");
                    submitted.push(Submitted {
                        job: j,
                        target: target.clone(),
                        task: Ok(task),
                        started,
                    });
                    continue;
                }
                let not_started = |source| TargetError::NotStarted {
                    target: target.clone(),
                    source,
                };
                let task = match &uploaded {
                    Err(e) => Err(not_started(e.clone())),
                    Ok(src) => {
                        let mut opts = Struct::new();
                        if r.scratch {
                            opts.insert("scratch".into(), Value::Boolean(true));
                        }
                        match client.call(
                            "build",
                            vec![
                                kojiwire::string(src),
                                kojiwire::string(target),
                                Value::Struct(opts),
                            ],
                            Struct::new(),
                        ) {
                            Ok(v) => v.as_i64().ok_or_else(|| TargetError::NoTaskId {
                                target: target.clone(),
                                answer: format!("{v:?}"),
                            }),
                            Err(e) if e.is_unreachable() => return Err(e.into()),
                            Err(e) => Err(not_started(Arc::new(e))),
                        }
                    }
                };
                if let Ok(id) = &task {
                    tracing::info!(task = id, repo = %job.repo, target = %target, "koji task created");
                    events.task_started(j, target, *id);
                }
                submitted.push(Submitted {
                    job: j,
                    target: target.clone(),
                    task,
                    started,
                });
            }
        }
        let ids: Vec<i64> = submitted
            .iter()
            .filter_map(|s| s.task.as_ref().ok().copied())
            .collect();
        let seen = client.watch_tasks(&ids, r.poll, r.task_timeout, &mut |round| {
            let open = round.iter().filter(|t| !t.state.is_done()).count();
            tracing::info!(open, total = round.len(), "koji polling round");
        })?;
        let state_of = |id: i64| {
            seen.iter()
                .find(|s| s.id == id)
                .map(|s| s.state)
                .unwrap_or(TaskState::Failed)
        };
        let outputs = task_outputs(&mut client, &ids)?;
        let mut out: Vec<Vec<TargetResult>> = jobs.iter().map(|_| Vec::new()).collect();
        for s in submitted {
            let job = &jobs[s.job];
            let mut result = TargetResult {
                target: s.target.clone(),
                log: None,
                duration_ms: 0,
                result: Ok(Vec::new()),
                task_id: s.task.as_ref().ok().copied(),
                urls: Vec::new(),
            };
            result.result = match s.task {
                Err(e) => Err(e.into()),
                Ok(id) => {
                    let files = outputs.get(&id).cloned().unwrap_or_default();
                    let log_url = files
                        .iter()
                        .find(|f| f.ends_with("/build.log"))
                        .map(|f| client.file_url(f));
                    let local_log = job.dir.join(format!("{}.log", s.target));
                    if let Some(url) = &log_url
                        && client.download(url, &local_log).is_ok()
                    {
                        result.log = Some(local_log);
                    }
                    match state_of(id) {
                        TaskState::Closed => {
                            collect_rpms(&client, job, &s.target, &files, &mut result.urls)
                        }
                        TaskState::Canceled => Err(TargetError::Canceled {
                            id,
                            target: s.target.clone(),
                            url: task_url(&client, id),
                        }
                        .into()),
                        _ => Err(failure(&mut client, id, &s.target, &files).into()),
                    }
                }
            };
            result.duration_ms = s.started.elapsed().as_millis() as u64;
            events.target_ends(s.job, &s.target, result.result.is_ok());
            out[s.job].push(result);
        }
        client.logout();
        Ok(out)
    }
}

fn task_url(client: &KojiClient, id: i64) -> String {
    client.file_url(&format!("work/tasks/{}/{id}", id % 10000))
}

/// Output files (paths under the topurl) of each task and its children,
/// in two multicalls whatever the number of tasks.
fn task_outputs(
    client: &mut KojiClient,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, Vec<String>>, Error> {
    let children = client.multicall(
        ids.iter()
            .map(|&id| ("getTaskChildren".to_owned(), vec![kojiwire::int(id)]))
            .collect(),
    )?;
    // (owner task, task whose output is listed)
    let mut listed: Vec<(i64, i64)> = ids.iter().map(|&id| (id, id)).collect();
    for (&id, kids) in ids.iter().zip(children) {
        for kid in kids
            .ok()
            .as_ref()
            .and_then(|v| v.as_array())
            .unwrap_or_default()
        {
            if let Some(k) = kid.get("id").and_then(ValueExt::as_i64) {
                listed.push((id, k));
            }
        }
    }
    let lists = client.multicall(
        listed
            .iter()
            .map(|&(_, t)| ("listTaskOutput".to_owned(), vec![kojiwire::int(t)]))
            .collect(),
    )?;
    let mut out: std::collections::HashMap<i64, Vec<String>> = std::collections::HashMap::new();
    for (&(owner, task), files) in listed.iter().zip(lists) {
        let files = files.ok();
        for f in files
            .as_ref()
            .and_then(|v| v.as_array())
            .unwrap_or_default()
        {
            if let Some(name) = f.as_str()
                && !name.contains('/')
                && !name.starts_with('.')
            {
                out.entry(owner)
                    .or_default()
                    .push(format!("work/tasks/{}/{task}/{name}", task % 10000));
            }
        }
    }
    Ok(out)
}

/// The binary RPMs of a closed task: URLs recorded, files downloaded to
/// `<job dir>/koji-<target>/`.
fn collect_rpms(
    client: &KojiClient,
    job: &Job,
    target: &str,
    files: &[String],
    urls: &mut Vec<String>,
) -> Result<Vec<PathBuf>, super::Error> {
    let dest = job.dir.join(format!("koji-{target}"));
    super::create_dir(&dest)?;
    let mut rpms = Vec::new();
    for f in files
        .iter()
        .filter(|f| f.ends_with(".rpm") && !f.ends_with(".src.rpm"))
    {
        let url = client.file_url(f);
        let name = f.rsplit('/').next().unwrap_or(f);
        let path = dest.join(name);
        client.download(&url, &path)?;
        urls.push(url);
        rpms.push(path);
    }
    if rpms.is_empty() {
        return Err(TargetError::NoRpms {
            target: target.to_owned(),
        }
        .into());
    }
    Ok(rpms)
}

/// The fault of a failed task and the tail of its log.
fn failure(client: &mut KojiClient, id: i64, target: &str, files: &[String]) -> TargetError {
    let fault = match client.call("getTaskResult", vec![kojiwire::int(id)], Struct::new()) {
        Err(Error::Fault { name, message, .. }) => TaskFault::Fault { name, message },
        Err(e) => TaskFault::Query(e),
        Ok(_) => TaskFault::Unknown,
    };
    let log_tail = ["build.log", "root.log"].into_iter().find_map(|log| {
        let f = files.iter().find(|f| f.ends_with(&format!("/{log}")))?;
        let text = client.fetch_tail(&client.file_url(f), LOG_TAIL_BYTES)?;
        let tail = super::srpm::last_lines(&text, 15);
        (!tail.is_empty()).then_some((log, tail))
    });
    TargetError::Failed {
        id,
        target: target.to_owned(),
        fault: Box::new(fault),
        log_tail,
        url: task_url(client, id),
    }
}
