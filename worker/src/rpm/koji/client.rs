//! A Koji hub client over XML-RPC (HTTP by `ureq`, codec `kojiwire`):
//! calls with Koji's keyword arguments, session headers, `multiCall`,
//! chunked `rawUpload` with adler32 checksums as `koji` itself uploads,
//! files from the topurl. Transport failures are retried with exponential
//! backoff; faults are not (the call reached the hub and was answered).
//!
//! The session key and the password never appear in an error, a log line
//! or a URL this module prints.

use super::profile::{AuthType, Resolved};
use kojiwire::{Fault, Struct, Value, ValueExt};
use secrecy::{ExposeSecret, SecretString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Koji hub {url} unreachable after {tries} tries: {message}")]
    Unreachable {
        url: String,
        tries: u32,
        message: String,
    },
    #[error("Koji login as {user:?} at {url} refused: {message}")]
    LoginRefused {
        url: String,
        user: String,
        message: String,
    },
    #[error("Koji hub {url}: {method} failed: {name}: {message}")]
    Fault {
        url: String,
        method: String,
        code: i32,
        name: &'static str,
        message: String,
    },
    /// The hub answered, but not as XML-RPC allows (HTTP status, counts).
    #[error("Koji hub {url}: {method}: {message}")]
    Protocol {
        url: String,
        method: String,
        message: String,
    },
    #[error("Koji hub {url}: {method}: {source}")]
    Malformed {
        url: String,
        method: String,
        #[source]
        source: kojiwire::Error,
    },
    /// The hub's checks of an upload disagree with what was sent.
    #[error("upload of {file} to {url}: {message}")]
    Upload {
        file: PathBuf,
        url: String,
        message: String,
    },
    #[error("upload of {file} to {url}: {source}")]
    UploadAnswer {
        file: PathBuf,
        url: String,
        #[source]
        source: kojiwire::Error,
    },
    /// The file server answered with an error status.
    #[error("cannot download {url}: {message}")]
    Download { url: String, message: String },
    #[error("cannot download {url}: {}: {source}", path.display())]
    DownloadWrite {
        url: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
}

impl Error {
    /// The hub (or its file server) could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }
}

/// Why one HTTP exchange failed: worth another try, or not. Transport
/// errors are text on purpose: see [`describe_ureq`].
enum Transport {
    Retry(String),
    Fatal(String),
}

/// Why one try of a download failed: as [`Transport`], or writing the file.
enum Fetch {
    Retry(String),
    Fatal(String),
    Write(PathBuf, std::io::Error),
}

struct Session {
    id: i64,
    key: SecretString,
    header_auth: bool,
}

pub struct KojiClient {
    agent: ureq::Agent,
    server: String,
    topurl: String,
    session: Option<Session>,
    callnum: u64,
    retries: u32,
    backoff: Duration,
    blocksize: usize,
}

impl KojiClient {
    pub fn new(r: &Resolved) -> Result<Self, Error> {
        use ureq::tls::{Certificate, ClientCert, PemItem, RootCerts, TlsConfig};
        let mut tls = TlsConfig::builder();
        if let Some(ca) = &r.serverca {
            let pem = std::fs::read(ca).map_err(|source| Error::Io {
                path: ca.clone(),
                source,
            })?;
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(Error::Tls(format!("no certificate in {}", ca.display())));
            }
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
        if r.auth == AuthType::Ssl
            && let Some(cert) = &r.cert
        {
            let pem = std::fs::read(cert).map_err(|source| Error::Io {
                path: cert.clone(),
                source,
            })?;
            let mut chain = Vec::new();
            let mut key = None;
            for item in ureq::tls::parse_pem(&pem) {
                match item {
                    Ok(PemItem::Certificate(c)) => chain.push(c),
                    Ok(PemItem::PrivateKey(k)) => key = Some(k),
                    _ => {}
                }
            }
            let Some(key) = key.filter(|_| !chain.is_empty()) else {
                return Err(Error::Tls(format!(
                    "{} must hold the client certificate and its private key (PEM)",
                    cert.display()
                )));
            };
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(r.timeout))
            .user_agent("patchline (koji/1)")
            .tls_config(tls.build())
            .build();
        Ok(Self {
            agent: config.into(),
            server: r.server.clone(),
            topurl: r.topurl.clone(),
            session: None,
            callnum: 0,
            retries: r.retries,
            backoff: r.backoff,
            blocksize: r.blocksize,
        })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn topurl(&self) -> &str {
        &self.topurl
    }

    /// Logs in as configured: `login(user, password)` or `sslLogin`.
    pub fn login(&mut self, r: &Resolved) -> Result<(), Error> {
        let user = r.user.clone().unwrap_or_default();
        let result = match r.auth {
            AuthType::Password => {
                let password = r
                    .password
                    .as_ref()
                    .map(|p| p.expose_secret().to_owned())
                    .unwrap_or_default();
                self.call(
                    "login",
                    vec![kojiwire::string(&user), kojiwire::string(password)],
                    Struct::from([("opts".to_owned(), Value::Nil)]),
                )
            }
            AuthType::Ssl => self.call_at("/ssllogin", "sslLogin", vec![], Struct::new()),
        };
        let sinfo = match result {
            Ok(v) => v,
            Err(Error::Fault { message, .. }) => {
                return Err(Error::LoginRefused {
                    url: self.server.clone(),
                    user,
                    message,
                });
            }
            Err(e) => return Err(e),
        };
        let id = sinfo.get("session-id").and_then(ValueExt::as_i64);
        let key = sinfo.get("session-key").and_then(ValueExt::as_str);
        let (Some(id), Some(key)) = (id, key) else {
            return Err(Error::LoginRefused {
                url: self.server.clone(),
                user,
                message: "the hub answered without a session".into(),
            });
        };
        self.session = Some(Session {
            id,
            key: SecretString::from(key.to_owned()),
            header_auth: sinfo
                .get("header-auth")
                .and_then(ValueExt::as_bool)
                .unwrap_or(false),
        });
        self.callnum = 0;
        Ok(())
    }

    pub fn logout(&mut self) {
        if self.session.is_some() {
            let _ = self.call("logout", vec![], Struct::new());
            self.session = None;
        }
    }

    /// One XML-RPC call.
    pub fn call(&mut self, method: &str, args: Vec<Value>, kwargs: Struct) -> Result<Value, Error> {
        self.call_at("", method, args, kwargs)
    }

    fn call_at(
        &mut self,
        suffix: &str,
        method: &str,
        args: Vec<Value>,
        kwargs: Struct,
    ) -> Result<Value, Error> {
        let body = kojiwire::encode_call(method, kojiwire::encode_args(args, kwargs));
        let url = format!("{}{suffix}", self.server);
        let answer = self.post(&url, method, &[], "text/xml", body.as_bytes())?;
        let text = String::from_utf8_lossy(&answer);
        match kojiwire::decode_response(&text) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(fault)) => Err(self.fault(method, &fault)),
            Err(source) => Err(Error::Malformed {
                url: self.server.clone(),
                method: method.to_owned(),
                source,
            }),
        }
    }

    pub fn fault(&self, method: &str, f: &Fault) -> Error {
        Error::Fault {
            url: self.server.clone(),
            method: method.to_owned(),
            code: f.code(),
            name: kojiwire::fault_code::name(f.code()),
            message: f.string().trim().to_owned(),
        }
    }

    /// `multiCall`: every call in one HTTP request; a result per call.
    pub fn multicall(
        &mut self,
        calls: Vec<(String, Vec<Value>)>,
    ) -> Result<Vec<Result<Value, Fault>>, Error> {
        let n = calls.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let v = self.call(
            "multiCall",
            kojiwire::multicall_params(calls),
            Struct::new(),
        )?;
        let entries = v.as_array().unwrap_or_default();
        if entries.len() != n {
            return Err(Error::Protocol {
                url: self.server.clone(),
                method: "multiCall".into(),
                message: format!("{} results for {n} calls", entries.len()),
            });
        }
        Ok(entries.iter().map(kojiwire::multicall_entry).collect())
    }

    /// Uploads `file` to `<server_dir>/<name>` in `blocksize` chunks, each
    /// checked (size, adler32) as the hub received it, then the whole file
    /// checked with `checkUpload`. A chunk whose connection broke is sent
    /// again at the same offset; a whole-file mismatch restarts the upload
    /// once from offset 0.
    pub fn upload(&mut self, file: &Path, server_dir: &str) -> Result<(), Error> {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut last = None;
        for _attempt in 0..2 {
            match self.upload_once(file, server_dir, &name) {
                Ok(()) => return Ok(()),
                Err(e @ (Error::Upload { .. } | Error::UploadAnswer { .. })) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Upload {
            file: file.to_owned(),
            url: self.server.clone(),
            message: "upload failed".into(),
        }))
    }

    fn upload_once(&mut self, file: &Path, server_dir: &str, name: &str) -> Result<(), Error> {
        let io = |source| Error::Io {
            path: file.to_owned(),
            source,
        };
        let mut f = std::fs::File::open(file).map_err(io)?;
        let mut full = kojiwire::Adler32::default();
        let mut offset: u64 = 0;
        let mut chunk = vec![0u8; self.blocksize];
        let server_url = self.server.clone();
        let upload_err = |message: String| Error::Upload {
            file: file.to_owned(),
            url: server_url.clone(),
            message,
        };
        loop {
            let n = read_full(&mut f, &mut chunk).map_err(io)?;
            if n == 0 && offset > 0 {
                break;
            }
            let data = &chunk[..n];
            let query = [
                ("filename", name.to_owned()),
                ("filepath", server_dir.to_owned()),
                ("fileverify", "adler32".to_owned()),
                ("offset", offset.to_string()),
                ("overwrite", "1".to_owned()),
            ];
            let server = self.server.clone();
            let answer = self.post(
                &server,
                "rawUpload",
                &query,
                "application/octet-stream",
                data,
            )?;
            let result = match kojiwire::decode_response(&String::from_utf8_lossy(&answer)) {
                Ok(Ok(v)) => v,
                Ok(Err(fault)) => return Err(self.fault("rawUpload", &fault)),
                Err(source) => {
                    return Err(Error::UploadAnswer {
                        file: file.to_owned(),
                        url: self.server.clone(),
                        source,
                    });
                }
            };
            let want = kojiwire::Adler32::of(data).hexdigest();
            let got_size = result.get("size").and_then(ValueExt::as_i64);
            let got_sum = result.get("hexdigest").and_then(ValueExt::as_str);
            if got_size != Some(n as i64) || got_sum != Some(want.as_str()) {
                return Err(upload_err(format!(
                    "chunk at offset {offset}: hub received {got_size:?} bytes with adler32 {got_sum:?}, sent {n} with {want}"
                )));
            }
            full.update(data);
            offset += n as u64;
            if n < chunk.len() {
                break;
            }
        }
        let check = self.call(
            "checkUpload",
            vec![kojiwire::string(server_dir), kojiwire::string(name)],
            Struct::from([("verify".to_owned(), kojiwire::string("adler32"))]),
        )?;
        let size = check.get("size").and_then(ValueExt::as_i64);
        let sum = check.get("hexdigest").and_then(ValueExt::as_str);
        if size != Some(offset as i64) || sum != Some(full.hexdigest().as_str()) {
            return Err(upload_err(format!(
                "the hub holds {size:?} bytes with adler32 {sum:?}, sent {offset} with {}",
                full.hexdigest()
            )));
        }
        Ok(())
    }

    /// A file under the topurl, e.g. `work/tasks/7/7/build.log`.
    pub fn file_url(&self, rel: &str) -> String {
        format!("{}/{}", self.topurl, rel.trim_start_matches('/'))
    }

    /// Downloads `url` to `dest` (through `dest.part`, renamed when whole).
    pub fn download(&self, url: &str, dest: &Path) -> Result<(), Error> {
        let part = dest.with_extension("part");
        let mut tries = 0;
        loop {
            tries += 1;
            let attempt = (|| -> Result<(), Fetch> {
                let resp = self
                    .agent
                    .get(url)
                    .call()
                    .map_err(|e| Fetch::Retry(e.to_string()))?;
                let status = resp.status().as_u16();
                if status >= 500 {
                    return Err(Fetch::Retry(format!("HTTP {status}")));
                }
                if status != 200 {
                    return Err(Fetch::Fatal(format!("HTTP {status}")));
                }
                let mut out =
                    std::fs::File::create(&part).map_err(|e| Fetch::Write(part.clone(), e))?;
                let mut reader = resp.into_body().into_reader();
                std::io::copy(&mut reader, &mut out).map_err(|e| Fetch::Retry(e.to_string()))?;
                out.flush().map_err(|e| Fetch::Write(part.clone(), e))?;
                std::fs::rename(&part, dest).map_err(|e| Fetch::Write(dest.to_owned(), e))
            })();
            match attempt {
                Ok(()) => return Ok(()),
                Err(Fetch::Fatal(message)) => {
                    return Err(Error::Download {
                        url: url.to_owned(),
                        message,
                    });
                }
                Err(Fetch::Write(path, source)) => {
                    return Err(Error::DownloadWrite {
                        url: url.to_owned(),
                        path,
                        source,
                    });
                }
                Err(Fetch::Retry(message)) if tries >= self.retries => {
                    let _ = std::fs::remove_file(&part);
                    return Err(Error::Unreachable {
                        url: url.to_owned(),
                        tries,
                        message,
                    });
                }
                Err(Fetch::Retry(message)) => {
                    tracing::warn!(url, tries, %message, "download failed, retrying");
                    std::thread::sleep(self.pause(tries));
                }
            }
        }
    }

    /// The last `max` bytes of a text file under the topurl, or `None`.
    pub fn fetch_tail(&self, url: &str, max: usize) -> Option<String> {
        let resp = self.agent.get(url).call().ok()?;
        if resp.status().as_u16() != 200 {
            return None;
        }
        let mut body = Vec::new();
        resp.into_body()
            .into_reader()
            .take(64 * 1024 * 1024)
            .read_to_end(&mut body)
            .ok()?;
        let start = body.len().saturating_sub(max);
        Some(String::from_utf8_lossy(&body[start..]).into_owned())
    }

    fn pause(&self, tries: u32) -> Duration {
        let factor = 1u32 << tries.saturating_sub(1).min(16);
        (self.backoff * factor).min(Duration::from_secs(30))
    }

    /// POSTs `body`, retrying transport failures; the session goes in
    /// headers (or the query for hubs without header auth).
    fn post(
        &mut self,
        url: &str,
        method: &str,
        query: &[(&str, String)],
        content_type: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let mut tries = 0;
        loop {
            tries += 1;
            let callnum = self.callnum;
            self.callnum += 1;
            let mut full_query: Vec<(&str, String)> = query.to_vec();
            let mut req_headers: Vec<(&str, String)> = Vec::new();
            if let Some(s) = &self.session {
                if s.header_auth {
                    req_headers.push(("Koji-Session-Id", s.id.to_string()));
                    req_headers.push(("Koji-Session-Key", s.key.expose_secret().to_owned()));
                    req_headers.push(("Koji-Session-Callnum", callnum.to_string()));
                } else {
                    full_query.push(("session-id", s.id.to_string()));
                    full_query.push(("session-key", s.key.expose_secret().to_owned()));
                    full_query.push(("callnum", callnum.to_string()));
                }
            }
            let target = if full_query.is_empty() {
                url.to_owned()
            } else {
                format!("{url}?{}", encode_query(&full_query))
            };
            let attempt = (|| -> Result<Vec<u8>, Transport> {
                let mut req = self
                    .agent
                    .post(&target)
                    .header("Content-Type", content_type);
                for (k, v) in &req_headers {
                    req = req.header(*k, v);
                }
                // Transport errors are rendered from ureq's kind only: its
                // messages may quote the URL, which can hold the session.
                let resp = req
                    .send(body)
                    .map_err(|e| Transport::Retry(describe_ureq(&e)))?;
                let status = resp.status().as_u16();
                let mut answer = Vec::new();
                resp.into_body()
                    .into_reader()
                    .take(256 * 1024 * 1024)
                    .read_to_end(&mut answer)
                    .map_err(|e| Transport::Retry(e.kind().to_string()))?;
                match status {
                    200 => Ok(answer),
                    500..=599 => Err(Transport::Retry(format!("HTTP {status}"))),
                    _ => Err(Transport::Fatal(format!("HTTP {status}"))),
                }
            })();
            match attempt {
                Ok(answer) => return Ok(answer),
                Err(Transport::Fatal(message)) => {
                    return Err(Error::Protocol {
                        url: url.to_owned(),
                        method: method.to_owned(),
                        message,
                    });
                }
                Err(Transport::Retry(message)) if tries >= self.retries => {
                    return Err(Error::Unreachable {
                        url: url.to_owned(),
                        tries,
                        message,
                    });
                }
                Err(Transport::Retry(message)) => {
                    tracing::warn!(url, method, tries, %message, "Koji call failed in transport, retrying");
                    std::thread::sleep(self.pause(tries));
                }
            }
        }
    }
}

fn describe_ureq(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => format!("{}: {io}", io.kind()),
        ureq::Error::Timeout(t) => format!("timeout ({t})"),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Tls(m) => format!("TLS: {m}"),
        ureq::Error::Rustls(r) => format!("TLS: {r}"),
        other => {
            // Other kinds carry no URL; keep their text short.
            let s = other.to_string();
            s.chars().take(200).collect()
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn encode_query(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_encoding() {
        assert_eq!(
            super::encode_query(&[("filepath", "cli-build/a b".into()), ("k", "x&y=é".into())]),
            "filepath=cli-build/a%20b&k=x%26y%3D%C3%A9"
        );
    }
}

/// What one polling round saw of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSeen {
    pub id: i64,
    pub state: kojiwire::TaskState,
}

impl KojiClient {
    /// Watches `ids` until every one is CLOSED, FAILED or CANCELED: each
    /// round is ONE `multiCall` of `getTaskInfo` for the tasks not done
    /// yet, however many there are. `on_round` sees every round's states.
    pub fn watch_tasks(
        &mut self,
        ids: &[i64],
        poll: Duration,
        timeout: Duration,
        on_round: &mut dyn FnMut(&[TaskSeen]),
    ) -> Result<Vec<TaskSeen>, Error> {
        let started = std::time::Instant::now();
        let mut states: Vec<TaskSeen> = ids
            .iter()
            .map(|&id| TaskSeen {
                id,
                state: kojiwire::TaskState::Free,
            })
            .collect();
        loop {
            let pending: Vec<usize> = (0..states.len())
                .filter(|&i| !states[i].state.is_done())
                .collect();
            if pending.is_empty() {
                return Ok(states);
            }
            if started.elapsed() > timeout {
                return Err(Error::Protocol {
                    url: self.server.clone(),
                    method: "getTaskInfo".into(),
                    message: format!(
                        "tasks {:?} not finished after {} s",
                        pending.iter().map(|&i| states[i].id).collect::<Vec<_>>(),
                        timeout.as_secs()
                    ),
                });
            }
            let calls = pending
                .iter()
                .map(|&i| ("getTaskInfo".to_owned(), vec![kojiwire::int(states[i].id)]))
                .collect();
            let results = self.multicall(calls)?;
            for (&i, r) in pending.iter().zip(results) {
                let info = r.map_err(|f| self.fault("getTaskInfo", &f))?;
                let state = info
                    .get("state")
                    .and_then(ValueExt::as_i64)
                    .and_then(kojiwire::TaskState::from_code);
                match state {
                    Some(s) => states[i].state = s,
                    None => {
                        return Err(Error::Protocol {
                            url: self.server.clone(),
                            method: "getTaskInfo".into(),
                            message: format!("task {} unknown to the hub", states[i].id),
                        });
                    }
                }
            }
            on_round(&states);
            if states.iter().all(|s| s.state.is_done()) {
                return Ok(states);
            }
            std::thread::sleep(poll);
        }
    }
}
