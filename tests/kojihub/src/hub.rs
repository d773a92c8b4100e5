//! The hub's state and its XML-RPC methods: sessions, uploads, targets and
//! tags, tasks (each a real `rpmbuild` in a background thread), builds and
//! RPMs, files under the topurl layout, and the fault-injection switches.
//!
//! It models what the `koji` CLI and patchline's client observe, not
//! Koji's database: one `build` task per build (no child `buildArch`
//! tasks), one host, one volume, every password accepted.

use crate::http::{Action, BodyCut, Handler, Request, Response};
use kojiwire::{Fault, Struct, TaskState, Value, ValueExt, fault_code, int, string, structure};
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const KOJI_VERSION: &str = "1.35.0";

/// Switches the tests flip at run time (`/control/...`) or at start.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Tasks created from now on fail after starting (an injected failure,
    /// not rpmbuild's).
    pub fail_tasks: u32,
    /// Tasks stay FREE this long before they start building.
    pub build_delay_ms: u64,
    /// Every hub answer is delayed this long.
    pub slow_ms: u64,
    /// The next N requests to /kojihub are dropped without an answer.
    pub drop_requests: u32,
    /// The next rawUpload request is cut after this many body bytes.
    pub cut_upload_after: Option<usize>,
    /// `login` answers with an AuthError.
    pub refuse_login: bool,
}

struct Session {
    key: String,
    user: String,
}

struct Task {
    id: i64,
    state: TaskState,
    src: String,
    target: String,
    scratch: bool,
    owner: i64,
    created: f64,
    started: Option<f64>,
    completed: Option<f64>,
    /// On FAILED: the fault getTaskResult raises.
    fault: Option<Fault>,
    /// On CLOSED: the task result.
    result: Option<Value>,
    child: Option<Child>,
    cancel_requested: bool,
}

struct Build {
    id: i64,
    name: String,
    version: String,
    release: String,
    task_id: i64,
    created: f64,
    completed: f64,
}

struct Rpm {
    id: i64,
    build_id: i64,
    name: String,
    version: String,
    release: String,
    arch: String,
    size: u64,
    buildtime: i64,
    payloadhash: String,
}

/// `(name, value)` of the macros a buildroot defines (`dist`, `rhel`, ...).
pub type Macros = Vec<(String, String)>;

/// A build target as Koji has it: a name, a build tag whose extra
/// settings hold the platform's macros (`rpm.macro.dist` and friends, read
/// with `getBuildConfig`), and a destination tag.
pub struct Target {
    pub name: String,
    /// The build tag's macros without the `rpm.macro.` prefix.
    pub macros: BTreeMap<String, String>,
}

impl Target {
    /// A target named as Fedora's and EPEL's are (`f41-candidate`,
    /// `epel9-candidate`, `el9`), with `dist` if given, else the dist
    /// those names stand for (`.fc41`, `.el9`), and the platform macros
    /// the dist implies (`fedora`/`fcNN`, `rhel`/`elN`).
    pub fn new(name: &str, dist: Option<&str>) -> Self {
        let stem = name.strip_suffix("-candidate").unwrap_or(name);
        let dist = dist.map(str::to_owned).unwrap_or_else(|| {
            let mut words = stem.split('-');
            let first = words.next().unwrap_or(stem);
            let number = |prefix: &str| {
                first
                    .strip_prefix(prefix)
                    .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            };
            if let Some(n) = number("epel").or(number("el")) {
                format!(".el{n}")
            } else if let Some(n) = number("fc").or(number("f")) {
                format!(".fc{n}")
            } else if let Some(n) = (first == "rhel")
                .then(|| words.next())
                .flatten()
                .and_then(|v| v.split('.').next())
            {
                format!(".el{n}")
            } else {
                let clean: String = first
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                format!(".{clean}")
            }
        });
        let mut macros = BTreeMap::new();
        let platform = |prefix: &str| {
            dist.strip_prefix(prefix)
                .map(|r| r.split(['.', '_']).next().unwrap_or(r).to_owned())
                .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        };
        if let Some(n) = platform(".el") {
            macros.insert("rhel".to_owned(), n.clone());
            macros.insert(format!("el{n}"), "1".to_owned());
        } else if let Some(n) = platform(".fc") {
            macros.insert("fedora".to_owned(), n.clone());
            macros.insert(format!("fc{n}"), "1".to_owned());
        }
        macros.insert("dist".to_owned(), dist);
        Target {
            name: name.to_owned(),
            macros,
        }
    }

    /// `epel9-candidate` builds in `epel9-build`; `el9` in `el9-build`.
    fn build_tag(&self) -> String {
        let stem = self.name.strip_suffix("-candidate").unwrap_or(&self.name);
        format!("{stem}-build")
    }

    /// Where builds are tagged: `epel9-candidate` -> `epel9`.
    fn dest_tag(&self) -> String {
        self.name
            .strip_suffix("-candidate")
            .unwrap_or(&self.name)
            .to_owned()
    }
}

#[derive(Default)]
struct State {
    sessions: HashMap<i64, Session>,
    users: Vec<String>,
    tasks: BTreeMap<i64, Task>,
    builds: BTreeMap<i64, Build>,
    rpms: BTreeMap<i64, Rpm>,
    next_id: i64,
    faults: Faults,
}

#[derive(Default)]
pub struct Stats {
    pub http_requests: AtomicU64,
    pub xmlrpc_requests: AtomicU64,
    pub cut_uploads: AtomicU64,
    pub calls: Mutex<BTreeMap<String, u64>>,
}

pub struct Hub {
    root: PathBuf,
    targets: Vec<Target>,
    state: Mutex<State>,
    pub stats: Stats,
    me: Mutex<Option<std::sync::Weak<Hub>>>,
}

type CallResult = Result<Value, Fault>;

fn generic(msg: impl Into<String>) -> Fault {
    Fault::new(fault_code::GENERIC, msg.into())
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn time_str(ts: f64) -> String {
    // Koji prints "2026-11-25 09:00:00.123456+00:00"; the CLI only shows it.
    let secs = ts as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A relative path that stays inside its root (no `..`, not absolute).
fn safe_relative(p: &str) -> Option<PathBuf> {
    let path = Path::new(p);
    if p.is_empty() || path.is_absolute() {
        return None;
    }
    path.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| path.to_path_buf())
}

pub fn task_dir_rel(id: i64) -> String {
    format!("work/tasks/{}/{}", id % 10000, id)
}

impl Hub {
    pub fn new(root: PathBuf, targets: Vec<Target>, faults: Faults) -> Arc<Self> {
        let hub = Arc::new(Hub {
            root,
            targets,
            state: Mutex::new(State {
                next_id: 1,
                faults,
                ..State::default()
            }),
            stats: Stats::default(),
            me: Mutex::new(None),
        });
        *lock(&hub.me) = Some(Arc::downgrade(&hub));
        hub
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn target(&self, name: &str) -> Option<(usize, &Target)> {
        self.targets
            .iter()
            .enumerate()
            .find(|(_, t)| t.name == name)
    }

    fn target_value(&self, i: usize, t: &Target) -> Value {
        let i = i as i64;
        structure([
            ("id", int(i + 1)),
            ("name", string(&t.name)),
            ("build_tag", int(2 * i + 1)),
            ("build_tag_name", string(t.build_tag())),
            ("dest_tag", int(2 * i + 2)),
            ("dest_tag_name", string(t.dest_tag())),
        ])
    }

    fn tag_value(&self, id: i64) -> Option<Value> {
        let i = usize::try_from((id - 1) / 2).ok()?;
        let t = self.targets.get(i)?;
        let build = id % 2 == 1;
        let name = if build { t.build_tag() } else { t.dest_tag() };
        // A build tag's extra settings carry the buildroot's macros, as
        // `koji edit-tag --extra rpm.macro.dist=.el9` sets them.
        let extra: Vec<(String, Value)> = if build {
            t.macros
                .iter()
                .map(|(k, v)| (format!("rpm.macro.{k}"), string(v)))
                .collect()
        } else {
            Vec::new()
        };
        Some(structure([
            ("id", int(id)),
            ("name", string(name)),
            ("arches", string("noarch x86_64")),
            ("locked", Value::Boolean(false)),
            ("perm", Value::Nil),
            ("perm_id", Value::Nil),
            ("maven_support", Value::Boolean(false)),
            ("maven_include_all", Value::Boolean(false)),
            ("extra", structure(extra)),
        ]))
    }

    /// Koji's `getBuildConfig(tag)`: the tag with its extra settings (no
    /// inheritance is modelled: each build tag has its own).
    fn build_config(&self, tag: &Value) -> Option<Value> {
        let id = match tag {
            Value::String(n) => self.tag_id(n),
            v => v.as_i64(),
        }?;
        self.tag_value(id)
    }

    fn tag_id(&self, name: &str) -> Option<i64> {
        self.targets.iter().enumerate().find_map(|(i, t)| {
            if name == t.dest_tag() {
                Some(2 * i as i64 + 2)
            } else if name == t.build_tag() {
                Some(2 * i as i64 + 1)
            } else {
                None
            }
        })
    }

    // ---- session ---------------------------------------------------------

    fn session_user(&self, req: &Request) -> Option<(i64, String)> {
        let id = req
            .header("Koji-Session-Id")
            .or_else(|| req.query("session-id"))?
            .parse::<i64>()
            .ok()?;
        let key = req
            .header("Koji-Session-Key")
            .or_else(|| req.query("session-key"))?;
        let state = self.state();
        let s = state.sessions.get(&id)?;
        (s.key == key).then(|| {
            let uid = state
                .users
                .iter()
                .position(|u| *u == s.user)
                .map(|p| p as i64 + 1)
                .unwrap_or(1);
            (uid, s.user.clone())
        })
    }

    fn user_value(uid: i64, name: &str) -> Value {
        structure([
            ("id", int(uid)),
            ("name", string(name)),
            ("status", int(0)),
            ("usertype", int(0)),
            ("krb_principal", Value::Nil),
            ("krb_principals", Value::Array(vec![])),
        ])
    }

    // ---- dispatch --------------------------------------------------------

    fn call(&self, req: &Request, name: &str, params: Vec<Value>) -> CallResult {
        *lock(&self.stats.calls).entry(name.to_owned()).or_default() += 1;
        let (args, kw) = kojiwire::decode_args(params);
        let arg = |i: usize, key: &str| -> Option<Value> {
            args.get(i).cloned().or_else(|| kw.get(key).cloned())
        };
        let need_login = || {
            self.session_user(req)
                .ok_or_else(|| Fault::new(fault_code::AUTH, "not logged in".into()))
        };
        match name {
            "multiCall" | "system.multicall" => {
                let calls = arg(0, "calls").unwrap_or(Value::Array(vec![]));
                let calls = calls
                    .as_array()
                    .ok_or_else(|| generic("multiCall takes a list of calls"))?;
                let results = calls
                    .iter()
                    .map(|c| {
                        let method = c
                            .get("methodName")
                            .and_then(ValueExt::as_str)
                            .ok_or_else(|| generic("multiCall entry without methodName"))?;
                        if method == "multiCall" || method == "system.multicall" {
                            return Err(generic("multiCall may not be nested"));
                        }
                        let params = c
                            .get("params")
                            .and_then(ValueExt::as_array)
                            .map(<[Value]>::to_vec)
                            .unwrap_or_default();
                        self.call(req, method, params)
                    })
                    .collect();
                Ok(kojiwire::multicall_result(results))
            }
            "getAPIVersion" => Ok(int(1)),
            "getKojiVersion" => Ok(string(KOJI_VERSION)),
            "hello" => Ok(string("Hello World")),
            "login" => {
                let user = arg(0, "user")
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let mut state = self.state();
                if state.faults.refuse_login || user.is_empty() {
                    return Err(Fault::new(
                        fault_code::AUTH,
                        format!("login failed for user {user:?}"),
                    ));
                }
                if !state.users.contains(&user) {
                    state.users.push(user.clone());
                }
                let id = state.next_id;
                state.next_id += 1;
                let key = format!(
                    "{id}-{:016x}",
                    now().to_bits() ^ (id as u64).rotate_left(17)
                );
                state.sessions.insert(
                    id,
                    Session {
                        key: key.clone(),
                        user,
                    },
                );
                Ok(structure([
                    ("session-id", int(id)),
                    ("session-key", string(key)),
                    ("header-auth", Value::Boolean(true)),
                ]))
            }
            "sslLogin" | "gssapiLogin" => Err(Fault::new(
                fault_code::AUTH,
                format!("{name} is not supported by the test double (password logins only)"),
            )),
            "logout" => {
                if let Some(id) = req
                    .header("Koji-Session-Id")
                    .and_then(|v| v.parse::<i64>().ok())
                    && self.session_user(req).is_some()
                {
                    self.state().sessions.remove(&id);
                }
                Ok(Value::Nil)
            }
            "getLoggedInUser" => Ok(match self.session_user(req) {
                Some((uid, user)) => Self::user_value(uid, &user),
                None => Value::Nil,
            }),
            "getUser" => Ok(Self::user_value(1, "kojiadmin")),
            "getBuildTargets" => {
                let wanted = arg(0, "info");
                Ok(Value::Array(
                    self.targets
                        .iter()
                        .enumerate()
                        .filter(|(i, t)| match &wanted {
                            Some(Value::String(n)) => *n == t.name,
                            Some(v) if v.as_i64().is_some() => v.as_i64() == Some(*i as i64 + 1),
                            _ => true,
                        })
                        .map(|(i, t)| self.target_value(i, t))
                        .collect(),
                ))
            }
            "getBuildTarget" => {
                let info = arg(0, "info").unwrap_or(Value::Nil);
                let found = match &info {
                    Value::String(n) => self.target(n),
                    v => v
                        .as_i64()
                        .and_then(|id| usize::try_from(id - 1).ok())
                        .and_then(|i| self.targets.get(i).map(|t| (i, t))),
                };
                Ok(found
                    .map(|(i, t)| self.target_value(i, t))
                    .unwrap_or(Value::Nil))
            }
            "getTag" => {
                let info = arg(0, "tagInfo").unwrap_or(Value::Nil);
                let id = match &info {
                    Value::String(n) => self.tag_id(n),
                    v => v.as_i64(),
                };
                Ok(id.and_then(|id| self.tag_value(id)).unwrap_or(Value::Nil))
            }
            "getBuildConfig" => {
                let tag = arg(0, "tag").unwrap_or(Value::Nil);
                self.build_config(&tag)
                    .ok_or_else(|| generic(format!("No such tagInfo: {tag:?}")))
            }
            "getHost" => Ok(structure([
                ("id", int(1)),
                ("name", string("kojihub-double")),
                ("arches", string("noarch x86_64")),
                ("enabled", Value::Boolean(true)),
                ("ready", Value::Boolean(true)),
                ("task_load", Value::Double(0.0)),
                ("capacity", Value::Double(2.0)),
                ("comment", Value::Nil),
                ("description", Value::Nil),
                ("user_id", int(1)),
            ])),
            "checkUpload" => {
                let path = arg(0, "path").and_then(|v| v.as_str().map(str::to_owned));
                let file = arg(1, "name").and_then(|v| v.as_str().map(str::to_owned));
                let verify = arg(2, "verify").and_then(|v| v.as_str().map(str::to_owned));
                let (Some(path), Some(file)) = (path, file) else {
                    return Err(Fault::new(
                        fault_code::PARAMETER,
                        "checkUpload(path, name)".into(),
                    ));
                };
                let full = self.upload_path(&path, &file)?;
                let Ok(data) = std::fs::read(&full) else {
                    return Ok(Value::Nil);
                };
                let mut out = vec![("size", int(data.len() as i64))];
                out.push((
                    "mtime",
                    Value::Double(
                        std::fs::metadata(&full)
                            .and_then(|m| m.modified())
                            .ok()
                            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                            .map(|d| d.as_secs_f64())
                            .unwrap_or(0.0),
                    ),
                ));
                match verify.as_deref() {
                    Some("adler32") => out.push((
                        "hexdigest",
                        string(kojiwire::Adler32::of(&data).hexdigest()),
                    )),
                    None | Some("") => {}
                    Some(other) => {
                        return Err(generic(format!("unsupported checksum type: {other}")));
                    }
                }
                Ok(structure(out))
            }
            "build" => {
                let (uid, _) = need_login()?;
                let src = arg(0, "src")
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .ok_or_else(|| {
                        Fault::new(fault_code::PARAMETER, "build(src, target)".into())
                    })?;
                let target = arg(1, "target")
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .ok_or_else(|| {
                        Fault::new(fault_code::PARAMETER, "build(src, target)".into())
                    })?;
                let opts = arg(2, "opts").unwrap_or(Value::Nil);
                let scratch = opts
                    .get("scratch")
                    .and_then(ValueExt::as_bool)
                    .unwrap_or(false);
                if self.target(&target).is_none() {
                    return Err(generic(format!("No such build target: {target}")));
                }
                if src.contains("://") {
                    return Err(generic(
                        "SCM builds are not supported by the test double; upload an SRPM",
                    ));
                }
                let srpm = self.upload_path_whole(&src)?;
                if !srpm.is_file() {
                    return Err(generic(format!("No such file: {src}")));
                }
                Ok(int(self.create_task(uid, src, target, scratch)))
            }
            "getTaskInfo" => {
                let with_request = arg(1, "request").and_then(|v| v.as_bool()).unwrap_or(false);
                let strict = arg(2, "strict").and_then(|v| v.as_bool()).unwrap_or(false);
                let one = |id: Option<i64>| -> CallResult {
                    let state = self.state();
                    match id.and_then(|id| state.tasks.get(&id)) {
                        Some(t) => Ok(self.task_value(t, with_request)),
                        None if strict => Err(generic(format!("No such task: {id:?}"))),
                        None => Ok(Value::Nil),
                    }
                };
                match arg(0, "task_id") {
                    Some(Value::Array(ids)) => Ok(Value::Array(
                        ids.iter()
                            .map(|v| one(v.as_i64()))
                            .collect::<Result<_, _>>()?,
                    )),
                    v => one(v.and_then(|v| v.as_i64())),
                }
            }
            "getTaskChildren" => Ok(Value::Array(vec![])),
            "getTaskDescendents" => {
                let id = arg(0, "task_id").and_then(|v| v.as_i64()).unwrap_or(0);
                Ok(structure([(id.to_string(), Value::Array(vec![]))]))
            }
            "getTaskResult" => {
                let id = arg(0, "task_id").and_then(|v| v.as_i64()).unwrap_or(0);
                let state = self.state();
                let t = state
                    .tasks
                    .get(&id)
                    .ok_or_else(|| generic(format!("No such task: {id}")))?;
                match t.state {
                    TaskState::Closed => Ok(t.result.clone().unwrap_or(Value::Nil)),
                    TaskState::Failed => {
                        Err(t.fault.clone().unwrap_or_else(|| generic("task failed")))
                    }
                    TaskState::Canceled => Err(generic(format!("Task {id} was canceled"))),
                    _ => Err(generic(format!("Task {id} is not finished"))),
                }
            }
            "listTaskOutput" => {
                let id = arg(0, "taskID").and_then(|v| v.as_i64()).unwrap_or(0);
                let stat = arg(1, "stat").and_then(|v| v.as_bool()).unwrap_or(false);
                let all_volumes = arg(2, "all_volumes")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
                let dir = self.root.join(task_dir_rel(id));
                let mut files: Vec<(String, u64, f64)> = std::fs::read_dir(&dir)
                    .map(|rd| {
                        rd.filter_map(Result::ok)
                            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                            .map(|e| {
                                let md = e.metadata().ok();
                                (
                                    e.file_name().to_string_lossy().into_owned(),
                                    md.as_ref().map(|m| m.len()).unwrap_or(0),
                                    md.and_then(|m| m.modified().ok())
                                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                                        .map(|d| d.as_secs_f64())
                                        .unwrap_or(0.0),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                files.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(if stat {
                    structure(files.into_iter().map(|(n, size, mtime)| {
                        let st = structure([
                            ("st_size", string(size.to_string())),
                            ("st_atime", Value::Double(mtime)),
                            ("st_mtime", Value::Double(mtime)),
                            ("st_ctime", Value::Double(mtime)),
                        ]);
                        let v = if all_volumes {
                            structure([("DEFAULT", st)])
                        } else {
                            st
                        };
                        (n, v)
                    }))
                } else if all_volumes {
                    structure(
                        files
                            .into_iter()
                            .map(|(n, _, _)| (n, Value::Array(vec![string("DEFAULT")]))),
                    )
                } else {
                    Value::Array(files.into_iter().map(|(n, _, _)| string(n)).collect())
                })
            }
            "downloadTaskOutput" => {
                let id = arg(0, "taskID").and_then(|v| v.as_i64()).unwrap_or(0);
                let file = arg(1, "fileName")
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let offset = arg(2, "offset")
                    .and_then(|v| v.as_i64())
                    .unwrap_or(0)
                    .max(0) as usize;
                let size = arg(3, "size").and_then(|v| v.as_i64()).unwrap_or(-1);
                let rel = safe_relative(&file)
                    .filter(|p| p.components().count() == 1)
                    .ok_or_else(|| generic(format!("Invalid file name: {file}")))?;
                let data = std::fs::read(self.root.join(task_dir_rel(id)).join(rel))
                    .map_err(|_| generic(format!("No file {file} in task {id}")))?;
                let start = offset.min(data.len());
                let end = if size < 0 {
                    data.len()
                } else {
                    start.saturating_add(size as usize).min(data.len())
                };
                Ok(Value::Base64(data[start..end].to_vec()))
            }
            "cancelTask" => {
                need_login()?;
                let id = arg(0, "task_id").and_then(|v| v.as_i64()).unwrap_or(0);
                self.cancel(id)?;
                Ok(Value::Nil)
            }
            "getBuild" => {
                let info = arg(0, "buildInfo").unwrap_or(Value::Nil);
                let strict = arg(1, "strict").and_then(|v| v.as_bool()).unwrap_or(false);
                let state = self.state();
                let found = match &info {
                    Value::String(nvr) if nvr.parse::<i64>().is_err() => state
                        .builds
                        .values()
                        .find(|b| format!("{}-{}-{}", b.name, b.version, b.release) == *nvr),
                    v => v.as_i64().and_then(|id| state.builds.get(&id)),
                };
                match found {
                    Some(b) => Ok(build_value(b)),
                    None if strict => Err(generic(format!("No such build: {info:?}"))),
                    None => Ok(Value::Nil),
                }
            }
            "listBuilds" => {
                let task = kw.get("taskID").and_then(|v| v.as_i64());
                let state = self.state();
                Ok(Value::Array(
                    state
                        .builds
                        .values()
                        .filter(|b| task.is_none_or(|t| b.task_id == t))
                        .map(build_value)
                        .collect(),
                ))
            }
            "getRPM" => {
                let info = arg(0, "rpminfo").unwrap_or(Value::Nil);
                let state = self.state();
                let found = match &info {
                    Value::String(s) => state.rpms.values().find(|r| {
                        format!("{}-{}-{}.{}", r.name, r.version, r.release, r.arch) == *s
                    }),
                    v => v.as_i64().and_then(|id| state.rpms.get(&id)),
                };
                Ok(found.map(rpm_value).unwrap_or(Value::Nil))
            }
            "listRPMs" => {
                let build = arg(0, "buildID").and_then(|v| v.as_i64());
                let arches: Option<Vec<String>> = match arg(5, "arches") {
                    Some(Value::String(a)) => Some(vec![a]),
                    Some(Value::Array(a)) => Some(
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect(),
                    ),
                    _ => None,
                };
                let state = self.state();
                Ok(Value::Array(
                    state
                        .rpms
                        .values()
                        .filter(|r| build.is_none_or(|b| r.build_id == b))
                        .filter(|r| arches.as_ref().is_none_or(|a| a.contains(&r.arch)))
                        .map(rpm_value)
                        .collect(),
                ))
            }
            "listArchives" | "listBuildroots" => Ok(Value::Array(vec![])),
            "getLastEvent" => Ok(structure([("id", int(1)), ("ts", Value::Double(now()))])),
            _ => Err(generic(format!("Invalid method: {name}"))),
        }
    }

    fn upload_path_whole(&self, rel: &str) -> Result<PathBuf, Fault> {
        safe_relative(rel)
            .map(|p| self.root.join("work").join(p))
            .ok_or_else(|| generic(format!("Invalid upload path: {rel}")))
    }

    fn upload_path(&self, dir: &str, file: &str) -> Result<PathBuf, Fault> {
        let f = safe_relative(file)
            .filter(|p| p.components().count() == 1)
            .ok_or_else(|| generic(format!("Invalid file name: {file}")))?;
        Ok(self.upload_path_whole(dir)?.join(f))
    }

    /// `rawUpload`: a chunk posted as the body, its place in the query.
    fn raw_upload(&self, req: &Request) -> CallResult {
        if self.session_user(req).is_none() {
            return Err(Fault::new(fault_code::AUTH, "not logged in".into()));
        }
        *lock(&self.stats.calls)
            .entry("rawUpload".to_owned())
            .or_default() += 1;
        let dir = req.query("filepath").unwrap_or("");
        let file = req.query("filename").unwrap_or("");
        let offset: i64 = req
            .query("offset")
            .and_then(|o| o.parse().ok())
            .ok_or_else(|| generic("rawUpload: offset missing"))?;
        let overwrite = req.query("overwrite").is_some_and(|v| v == "1");
        let path = self.upload_path(dir, file)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| generic(format!("upload: {e}")))?;
        }
        use std::io::{Seek, SeekFrom, Write};
        let existing = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if offset == 0 && existing > 0 && !overwrite {
            // Koji refuses to clobber an upload unless told to; a client
            // restarting an upload uses a new directory or overwrite.
            return Err(generic(format!("upload path exists: {dir}/{file}")));
        }
        if offset < 0 || offset as u64 > existing {
            return Err(generic(format!(
                "rawUpload: offset {offset} is beyond the {existing} bytes received"
            )));
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| generic(format!("upload: {e}")))?;
        if offset == 0 {
            f.set_len(0).map_err(|e| generic(format!("upload: {e}")))?;
        }
        f.seek(SeekFrom::Start(offset as u64))
            .and_then(|_| f.write_all(&req.body))
            .map_err(|e| generic(format!("upload: {e}")))?;
        let mut out = vec![("size", int(req.body.len() as i64))];
        if req.query("fileverify") == Some("adler32") {
            out.push((
                "hexdigest",
                string(kojiwire::Adler32::of(&req.body).hexdigest()),
            ));
        }
        Ok(structure(out))
    }

    fn task_value(&self, t: &Task, with_request: bool) -> Value {
        let mut v = vec![
            ("id", int(t.id)),
            ("state", int(t.state.code().into())),
            ("method", string("build")),
            ("arch", string("noarch")),
            ("label", Value::Nil),
            ("parent", Value::Nil),
            ("channel_id", int(1)),
            (
                "host_id",
                if t.started.is_some() {
                    int(1)
                } else {
                    Value::Nil
                },
            ),
            ("owner", int(t.owner)),
            ("priority", int(20)),
            ("weight", Value::Double(1.0)),
            ("waiting", Value::Nil),
            ("awaited", Value::Nil),
            ("create_time", string(time_str(t.created))),
            ("create_ts", Value::Double(t.created)),
            (
                "start_time",
                t.started.map(|s| string(time_str(s))).unwrap_or(Value::Nil),
            ),
            (
                "start_ts",
                t.started.map(Value::Double).unwrap_or(Value::Nil),
            ),
            (
                "completion_time",
                t.completed
                    .map(|s| string(time_str(s)))
                    .unwrap_or(Value::Nil),
            ),
            (
                "completion_ts",
                t.completed.map(Value::Double).unwrap_or(Value::Nil),
            ),
        ];
        if with_request {
            let mut opts: Struct = BTreeMap::new();
            if t.scratch {
                opts.insert("scratch".into(), Value::Boolean(true));
            }
            v.push((
                "request",
                Value::Array(vec![string(&t.src), string(&t.target), Value::Struct(opts)]),
            ));
        }
        structure(v)
    }

    fn create_task(&self, owner: i64, src: String, target: String, scratch: bool) -> i64 {
        let (id, delay, fail) = {
            let mut state = self.state();
            let id = state.next_id;
            state.next_id += 1;
            let fail = state.faults.fail_tasks > 0;
            if fail {
                state.faults.fail_tasks -= 1;
            }
            state.tasks.insert(
                id,
                Task {
                    id,
                    state: TaskState::Free,
                    src,
                    target,
                    scratch,
                    owner,
                    created: now(),
                    started: None,
                    completed: None,
                    fault: None,
                    result: None,
                    child: None,
                    cancel_requested: false,
                },
            );
            (id, state.faults.build_delay_ms, fail)
        };
        let me = lock(&self.me).clone().and_then(|w| w.upgrade());
        if let Some(hub) = me {
            std::thread::spawn(move || crate::builder::run_task(&hub, id, delay, fail));
        }
        id
    }

    fn cancel(&self, id: i64) -> Result<(), Fault> {
        let mut state = self.state();
        let t = state
            .tasks
            .get_mut(&id)
            .ok_or_else(|| generic(format!("No such task: {id}")))?;
        if t.state.is_done() {
            return Ok(());
        }
        t.cancel_requested = true;
        if let Some(child) = t.child.as_mut() {
            let _ = child.kill();
        }
        t.state = TaskState::Canceled;
        t.completed = Some(now());
        Ok(())
    }

    // ---- used by the builder --------------------------------------------

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What the builder needs to know: source path, the macros of the
    /// buildroot (`dist` among them), scratch; `None`
    /// when the task was canceled meanwhile.
    pub fn start_task(&self, id: i64) -> Option<(PathBuf, Macros, bool)> {
        let mut state = self.state();
        let t = state.tasks.get_mut(&id)?;
        if t.cancel_requested || t.state != TaskState::Free {
            return None;
        }
        t.state = TaskState::Open;
        t.started = Some(now());
        let src = self.root.join("work").join(&t.src);
        let (target, scratch) = (t.target.clone(), t.scratch);
        drop(state);
        Some((src, self.buildroot_macros(&target), scratch))
    }

    /// The macros a task for `target` builds with, found as a Koji builder
    /// finds them: `getBuildTarget` -> its build tag -> `getBuildConfig`
    /// -> `extra["rpm.macro.*"]`.
    fn buildroot_macros(&self, target: &str) -> Macros {
        let Some(info) = self.target(target).map(|(i, t)| self.target_value(i, t)) else {
            return Vec::new();
        };
        let Some(config) = info.get("build_tag").and_then(|tag| self.build_config(tag)) else {
            return Vec::new();
        };
        let Some(Value::Struct(extra)) = config.get("extra") else {
            return Vec::new();
        };
        extra
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix("rpm.macro.")?;
                Some((name.to_owned(), v.as_str()?.to_owned()))
            })
            .collect()
    }

    /// Registers the running rpmbuild so a cancel can kill it; `false` when
    /// the task was canceled already (the child is then killed here).
    pub fn attach_child(&self, id: i64, mut child: Child) -> bool {
        let mut state = self.state();
        match state.tasks.get_mut(&id) {
            Some(t) if !t.cancel_requested => {
                t.child = Some(child);
                true
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                false
            }
        }
    }

    /// Polls the attached child: `Some(success)` once it exited.
    pub fn poll_child(&self, id: i64) -> Option<bool> {
        let mut state = self.state();
        let t = state.tasks.get_mut(&id)?;
        let child = t.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                t.child = None;
                Some(status.success())
            }
            Ok(None) => None,
            Err(_) => {
                t.child = None;
                Some(false)
            }
        }
    }

    pub fn is_canceled(&self, id: i64) -> bool {
        self.state()
            .tasks
            .get(&id)
            .is_none_or(|t| t.cancel_requested)
    }

    pub fn fail_task(&self, id: i64, fault: Fault) {
        let mut state = self.state();
        if let Some(t) = state.tasks.get_mut(&id)
            && !t.cancel_requested
        {
            t.state = TaskState::Failed;
            t.fault = Some(fault);
            t.completed = Some(now());
        }
    }

    /// Records a finished build: its RPMs `(path under root, name, version,
    /// release, arch)`; non-scratch builds get a build entry.
    pub fn close_task(
        &self,
        id: i64,
        result: Value,
        build: Option<(String, String, String)>,
        rpms: Vec<RpmFile>,
    ) {
        let mut state = self.state();
        if state.tasks.get(&id).is_none_or(|t| t.cancel_requested) {
            return;
        }
        if let Some((name, version, release)) = build {
            let bid = state.next_id;
            state.next_id += 1;
            let created = state.tasks.get(&id).map(|t| t.created).unwrap_or(0.0);
            state.builds.insert(
                bid,
                Build {
                    id: bid,
                    name,
                    version,
                    release,
                    task_id: id,
                    created,
                    completed: now(),
                },
            );
            for r in rpms {
                let rid = state.next_id;
                state.next_id += 1;
                state.rpms.insert(
                    rid,
                    Rpm {
                        id: rid,
                        build_id: bid,
                        name: r.name,
                        version: r.version,
                        release: r.release,
                        arch: r.arch,
                        size: r.size,
                        buildtime: r.buildtime,
                        payloadhash: r.payloadhash,
                    },
                );
            }
        }
        if let Some(t) = state.tasks.get_mut(&id) {
            t.state = TaskState::Closed;
            t.result = Some(result);
            t.completed = Some(now());
        }
    }

    // ---- control ---------------------------------------------------------

    fn control(&self, req: &Request) -> Response {
        let q = |k: &str| req.query(k).map(str::to_owned);
        let num = |k: &str| q(k).and_then(|v| v.parse::<u64>().ok());
        let action = req.path.trim_start_matches("/control/");
        let mut state = self.state();
        match action {
            "stats" => {
                drop(state);
                let calls = lock(&self.stats.calls).clone();
                let body = serde_json::json!({
                    "http_requests": self.stats.http_requests.load(Ordering::SeqCst),
                    "xmlrpc_requests": self.stats.xmlrpc_requests.load(Ordering::SeqCst),
                    "cut_uploads": self.stats.cut_uploads.load(Ordering::SeqCst),
                    "calls": calls,
                });
                return Response::new(200, "application/json", body.to_string());
            }
            "reset-stats" => {
                self.stats.http_requests.store(0, Ordering::SeqCst);
                self.stats.xmlrpc_requests.store(0, Ordering::SeqCst);
                lock(&self.stats.calls).clear();
            }
            "fail" => state.faults.fail_tasks = num("n").unwrap_or(1) as u32,
            "delay" => state.faults.build_delay_ms = num("ms").unwrap_or(0),
            "slow" => state.faults.slow_ms = num("ms").unwrap_or(0),
            "drop" => state.faults.drop_requests = num("n").unwrap_or(1) as u32,
            "cut-upload" => state.faults.cut_upload_after = num("after").map(|n| n as usize),
            "refuse-login" => state.faults.refuse_login = q("on").as_deref() != Some("0"),
            "cancel" => {
                drop(state);
                let Some(id) = num("task") else {
                    return Response::text(400, "cancel?task=ID");
                };
                return match self.cancel(id as i64) {
                    Ok(()) => Response::text(200, "ok\n"),
                    Err(f) => Response::text(404, f.string().to_owned()),
                };
            }
            "tasks" => {
                let body: Vec<_> = state
                    .tasks
                    .values()
                    .map(|t| serde_json::json!({"id": t.id, "state": t.state.name(), "target": t.target}))
                    .collect();
                return Response::new(
                    200,
                    "application/json",
                    serde_json::Value::Array(body).to_string(),
                );
            }
            _ => return Response::text(404, format!("no control action {action:?}\n")),
        }
        Response::text(200, "ok\n")
    }

    fn file(&self, req: &Request) -> Response {
        let rel = req
            .path
            .trim_start_matches("/kojifiles")
            .trim_start_matches('/');
        let Some(rel) = safe_relative(rel) else {
            return Response::text(404, "not found");
        };
        let path = self.root.join(rel);
        let Ok(data) = std::fs::read(&path) else {
            return Response::text(404, "not found");
        };
        let ctype = if path.extension().is_some_and(|e| e == "log") {
            "text/plain; charset=utf-8"
        } else {
            "application/octet-stream"
        };
        let total = data.len();
        let mut resp = match req
            .header("Range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|r| r.parse::<usize>().ok())
        {
            Some(start) if start <= total => {
                let mut r = Response::new(206, ctype, data[start..].to_vec());
                r.headers.push((
                    "Content-Range".into(),
                    format!("bytes {start}-{}/{total}", total.saturating_sub(1)),
                ));
                r
            }
            Some(_) => Response::text(416, "range not satisfiable"),
            None => Response::new(200, ctype, data),
        };
        resp.head_only = req.method == "HEAD";
        resp
    }
}

pub struct RpmFile {
    pub name: String,
    pub version: String,
    pub release: String,
    pub arch: String,
    pub size: u64,
    pub buildtime: i64,
    pub payloadhash: String,
}

fn build_value(b: &Build) -> Value {
    structure([
        ("id", int(b.id)),
        ("build_id", int(b.id)),
        ("name", string(&b.name)),
        ("package_name", string(&b.name)),
        ("package_id", int(1)),
        ("version", string(&b.version)),
        ("release", string(&b.release)),
        ("epoch", Value::Nil),
        (
            "nvr",
            string(format!("{}-{}-{}", b.name, b.version, b.release)),
        ),
        ("state", int(kojiwire::build_state::COMPLETE.into())),
        ("task_id", int(b.task_id)),
        ("owner_id", int(1)),
        ("owner_name", string("kojiadmin")),
        ("volume_id", int(0)),
        ("volume_name", string("DEFAULT")),
        ("creation_time", string(time_str(b.created))),
        ("creation_ts", Value::Double(b.created)),
        ("start_time", string(time_str(b.created))),
        ("start_ts", Value::Double(b.created)),
        ("completion_time", string(time_str(b.completed))),
        ("completion_ts", Value::Double(b.completed)),
        ("source", Value::Nil),
        ("extra", Value::Nil),
        ("draft", Value::Boolean(false)),
        ("cg_id", Value::Nil),
        ("cg_name", Value::Nil),
    ])
}

fn rpm_value(r: &Rpm) -> Value {
    structure([
        ("id", int(r.id)),
        ("build_id", int(r.build_id)),
        ("name", string(&r.name)),
        ("version", string(&r.version)),
        ("release", string(&r.release)),
        ("arch", string(&r.arch)),
        ("epoch", Value::Nil),
        (
            "nvr",
            string(format!("{}-{}-{}", r.name, r.version, r.release)),
        ),
        ("size", int(r.size as i64)),
        ("buildtime", int(r.buildtime)),
        ("payloadhash", string(&r.payloadhash)),
        ("buildroot_id", int(1)),
        ("external_repo_id", int(0)),
        ("external_repo_name", string("INTERNAL")),
        ("metadata_only", Value::Boolean(false)),
        ("extra", Value::Nil),
        ("draft", Value::Boolean(false)),
    ])
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Handler for Hub {
    fn body_cut(&self, method: &str, path: &str, query: &[(String, String)]) -> BodyCut {
        if method != "POST" || path != "/kojihub" || !query.iter().any(|(k, _)| k == "filename") {
            return None;
        }
        let cut = self.state().faults.cut_upload_after.take();
        if cut.is_some() {
            self.stats.cut_uploads.fetch_add(1, Ordering::SeqCst);
        }
        cut
    }

    fn handle(&self, req: Request) -> Action {
        if req.path.starts_with("/control/") {
            return Action::Respond(self.control(&req));
        }
        self.stats.http_requests.fetch_add(1, Ordering::SeqCst);
        let slow = {
            let mut state = self.state();
            if req.path == "/kojihub" && state.faults.drop_requests > 0 {
                state.faults.drop_requests -= 1;
                return Action::Drop;
            }
            state.faults.slow_ms
        };
        if slow > 0 {
            std::thread::sleep(Duration::from_millis(slow));
        }
        if req.path.starts_with("/kojifiles") && matches!(req.method.as_str(), "GET" | "HEAD") {
            return Action::Respond(self.file(&req));
        }
        if req.path != "/kojihub" && req.path != "/kojihub/ssllogin" {
            return Action::Respond(Response::text(404, "not found"));
        }
        if req.method != "POST" {
            return Action::Respond(Response::text(405, "XML-RPC wants POST"));
        }
        self.stats.xmlrpc_requests.fetch_add(1, Ordering::SeqCst);
        let result = if req.query("filename").is_some() {
            self.raw_upload(&req)
        } else {
            match std::str::from_utf8(&req.body)
                .map_err(|_| generic("request body is not UTF-8"))
                .and_then(|b| kojiwire::decode_call(b).map_err(|e| generic(e.to_string())))
            {
                Ok((name, params)) => self.call(&req, &name, params),
                Err(f) => Err(f),
            }
        };
        let mut resp = Response::new(200, "text/xml", kojiwire::encode_response(&result));
        resp.headers
            .push(("Koji-Version".into(), KOJI_VERSION.into()));
        Action::Respond(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn targets_get_the_dist_and_macros_their_names_stand_for() {
        /// Name, dist given, then the dist, build tag, destination tag and
        /// other macros wanted.
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            &'a str,
            &'a str,
            &'a str,
            &'a [(&'a str, &'a str)],
        );
        let cases: &[Case] = &[
            (
                "el9",
                None,
                ".el9",
                "el9-build",
                "el9",
                &[("el9", "1"), ("rhel", "9")],
            ),
            (
                "epel9-candidate",
                None,
                ".el9",
                "epel9-build",
                "epel9",
                &[("el9", "1"), ("rhel", "9")],
            ),
            (
                "f41-candidate",
                None,
                ".fc41",
                "f41-build",
                "f41",
                &[("fc41", "1"), ("fedora", "41")],
            ),
            (
                "fc40",
                Some(".fc40"),
                ".fc40",
                "fc40-build",
                "fc40",
                &[("fc40", "1"), ("fedora", "40")],
            ),
            (
                "rhel-9.4.0-candidate",
                None,
                ".el9",
                "rhel-9.4.0-build",
                "rhel-9.4.0",
                &[("el9", "1"), ("rhel", "9")],
            ),
            ("side-tag", None, ".side", "side-tag-build", "side-tag", &[]),
            (
                "x",
                Some(".el9_4"),
                ".el9_4",
                "x-build",
                "x",
                &[("el9", "1"), ("rhel", "9")],
            ),
        ];
        for &(name, dist, want_dist, build, dest, macros) in cases {
            let t = Target::new(name, dist);
            assert_eq!(t.macros["dist"], want_dist, "{name}");
            assert_eq!(t.build_tag(), build, "{name}");
            assert_eq!(t.dest_tag(), dest, "{name}");
            let others: Vec<(&str, &str)> = t
                .macros
                .iter()
                .filter(|(k, _)| *k != "dist")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert_eq!(others, macros, "{name}");
        }
    }
}
