//! A throw-away dovecot 2.3 IMAP server for tests, plus the small tools that
//! go with it: a raw IMAP client that fills mailboxes (and reports APPENDUID)
//! and a TCP proxy that cuts connections on purpose.
//!
//! Each `Dovecot` has its own config, ports, certificate and maildir in a
//! temp dir, so tests run in parallel; it is stopped on drop. It must never
//! touch the system's dovecot configuration or mail. When dovecot is missing
//! the tests fail loudly instead of passing without a server.

#![allow(dead_code)] // Each test module uses a different part of the harness.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use patchline::mail::source::imap::{ImapAuth, ImapSecurity, ImapSettings};

/// The only user of every test server.
pub const USER: &str = "patchline";

const STARTUP_LIMIT: Duration = Duration::from_secs(15);
const START_ATTEMPTS: usize = 3;

/// What differs between test servers.
#[derive(Debug, Clone, Default)]
pub struct DovecotOptions {
    /// Hide IDLE from CAPABILITY, as some servers do, to exercise polling.
    pub without_idle: bool,
}

/// A running dovecot listening on 127.0.0.1: `imap_port` (plain, offers
/// STARTTLS) and `imaps_port` (implicit TLS), both with a self-signed
/// certificate for `127.0.0.1` and `localhost` found at `cert`.
pub struct Dovecot {
    dir: tempfile::TempDir,
    /// The config file, for `doveadm -c`.
    pub config: PathBuf,
    child: Child,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub password: String,
    /// PEM certificate of the server, to use as `ca_file`.
    pub cert: PathBuf,
}

impl Dovecot {
    pub fn start() -> Dovecot {
        Dovecot::start_with(DovecotOptions::default())
    }

    pub fn start_with(options: DovecotOptions) -> Dovecot {
        let binary = dovecot_binary();
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("dovecot-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for dovecot: {e}"));
        // Dovecot's unprivileged processes must reach the mail home inside.
        set_mode(dir.path(), 0o755);
        for sub in ["run", "state", "home"] {
            std::fs::create_dir(dir.path().join(sub))
                .unwrap_or_else(|e| panic!("cannot create {sub} in {:?}: {e}", dir.path()));
        }
        run(Command::new("chown")
            .args(["dovecot:dovecot"])
            .arg(dir.path().join("home")));
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        generate_certificate(&cert, &key);
        let password = format!("pw-{}-{}", std::process::id(), unique_number());
        // Tells our server's greeting from another test's on a recycled port.
        let greeting = format!("patchline-test-{}", unique_number());

        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            // Ports are picked free, then bound by dovecot: another test can
            // take one in between, hence the retries.
            let (imap_port, imaps_port) = (free_port(), free_port());
            let config = dir.path().join("dovecot.conf");
            let text = config_text(
                dir.path(),
                imap_port,
                imaps_port,
                &password,
                &greeting,
                &options,
            );
            std::fs::write(&config, text)
                .unwrap_or_else(|e| panic!("cannot write {config:?}: {e}"));
            let stderr = std::fs::File::create(dir.path().join("stderr.log"))
                .unwrap_or_else(|e| panic!("cannot create dovecot's stderr log: {e}"));
            let mut child = Command::new(&binary)
                .arg("-F")
                .arg("-c")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {binary:?}: {e}"));
            match wait_until_ready(&mut child, imap_port, &greeting) {
                Ok(()) => {
                    return Dovecot {
                        dir,
                        config,
                        child,
                        imap_port,
                        imaps_port,
                        password,
                        cert,
                    };
                }
                Err(why) => {
                    stop(&mut child);
                    failures.push(format!("{why}\n{}", logs(dir.path())));
                }
            }
        }
        panic!(
            "dovecot did not start after {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n---\n")
        );
    }

    /// Settings reading `mailbox` over the plain port with LOGIN; tests
    /// change what they exercise.
    pub fn settings(&self, mailbox: &str) -> ImapSettings {
        ImapSettings {
            host: "127.0.0.1".to_string(),
            port: self.imap_port,
            security: ImapSecurity::Plain,
            user: USER.to_string(),
            password: self.password.clone().into(),
            auth: ImapAuth::Login,
            mailbox: mailbox.to_string(),
            ca_file: None,
            timeout: Duration::from_secs(10),
            max_mail_size: 10 << 20,
            batch: 50,
        }
    }

    /// A logged-in raw client on the plain port.
    pub fn client(&self) -> ImapClient {
        ImapClient::login(self.imap_port, USER, &self.password)
    }

    /// Dovecot's log and stderr, for failure messages.
    pub fn logs(&self) -> String {
        logs(self.dir.path())
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn wait_until_ready(child: &mut Child, port: u16, greeting: &str) -> Result<(), String> {
    let started = Instant::now();
    while started.elapsed() < STARTUP_LIMIT {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("dovecot exited during startup with {status}"));
        }
        if greets(port, greeting) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "dovecot did not greet on 127.0.0.1:{port} within {STARTUP_LIMIT:?}"
    ))
}

/// Stops the master like `doveadm stop` does (SIGTERM, then it takes down
/// its children), without doveadm's polling that costs seconds per test; a
/// master that hangs is killed.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn logs(dir: &Path) -> String {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| format!("({name} unreadable: {e})"))
    };
    format!(
        "--- dovecot.log ---\n{}--- stderr ---\n{}",
        read("dovecot.log"),
        read("stderr.log")
    )
}

fn config_text(
    dir: &Path,
    imap_port: u16,
    imaps_port: u16,
    password: &str,
    greeting: &str,
    options: &DovecotOptions,
) -> String {
    let dir = dir.display();
    let capability = if options.without_idle {
        "imap_capability = IMAP4rev1 LITERAL+ UIDPLUS\n"
    } else {
        ""
    };
    format!(
        r#"base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{dir}/cert.pem
ssl_key = <{dir}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
first_valid_gid = 1
login_greeting = {greeting}
{capability}passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={dir}/home mail=maildir:~/Maildir
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
"#
    )
}

fn dovecot_binary() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")]);
    for dir in candidates {
        let binary = dir.join("dovecot");
        if binary.is_file() {
            return binary;
        }
    }
    panic!(
        "dovecot is not installed, and these tests need a real IMAP server: \
         run `apt-get install -y dovecot-imapd` (scripts/setup.sh does)"
    );
}

fn require_root() {
    let output = Command::new("id").arg("-u").output();
    let uid = output
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    assert_eq!(
        uid.trim(),
        "0",
        "the dovecot tests must run as root: dovecot switches its processes to \
         the dovecot and dovenull users"
    );
}

pub fn generate_certificate(cert: &Path, key: &Path) {
    let output = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl to make the test certificate: {e}"));
    assert!(
        output.status.success(),
        "openssl failed to make the test certificate: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {path:?}: {e}"));
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("bound socket has no address: {e}"))
        .port()
}

fn unique_number() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

fn greets(port: u16, greeting: &str) -> bool {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok()
        && line.starts_with("* OK")
        && line.contains(greeting)
}

/// Where APPEND put a mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub uidvalidity: u32,
    pub uid: u32,
}

/// A minimal IMAP client for setting up and inspecting mailboxes, written
/// against the protocol so it does not share bugs with the code under test.
pub struct ImapClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    tag: u32,
}

/// The untagged lines of a response and its tagged status line.
#[derive(Debug)]
pub struct Reply {
    pub untagged: Vec<String>,
    pub status: String,
}

impl ImapClient {
    pub fn login(port: u16, user: &str, password: &str) -> ImapClient {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("cannot connect to dovecot on port {port}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("cannot set a read timeout: {e}"));
        let writer = stream
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone the socket: {e}"));
        let mut client = ImapClient {
            reader: BufReader::new(stream),
            writer,
            tag: 0,
        };
        let greeting = client.read_line();
        assert!(
            greeting.starts_with("* OK"),
            "unexpected greeting {greeting:?}"
        );
        client.ok(&format!("LOGIN {} {}", quoted(user), quoted(password)));
        client
    }

    /// Sends one command and returns its reply, whatever the status.
    pub fn command(&mut self, command: &str) -> Reply {
        let tag = self.next_tag();
        self.send(format!("{tag} {command}\r\n").as_bytes());
        self.read_reply(&tag)
    }

    /// Sends one command and insists on OK.
    pub fn ok(&mut self, command: &str) -> Reply {
        let reply = self.command(command);
        assert!(
            reply.status.starts_with("OK"),
            "IMAP command {command:?} failed: {reply:?}"
        );
        reply
    }

    pub fn create(&mut self, mailbox: &str) {
        self.ok(&format!("CREATE {}", quoted(mailbox)));
    }

    pub fn delete(&mut self, mailbox: &str) {
        self.ok(&format!("DELETE {}", quoted(mailbox)));
    }

    /// Appends one mail and returns the UIDVALIDITY and UID dovecot gave it.
    pub fn append(&mut self, mailbox: &str, mail: &[u8]) -> Appended {
        let tag = self.next_tag();
        let head = format!("{tag} APPEND {} {{{}}}\r\n", quoted(mailbox), mail.len());
        self.send(head.as_bytes());
        let go_ahead = self.read_line();
        assert!(
            go_ahead.starts_with('+'),
            "APPEND not accepted: {go_ahead:?}"
        );
        self.send(mail);
        self.send(b"\r\n");
        let reply = self.read_reply(&tag);
        assert!(reply.status.starts_with("OK"), "APPEND failed: {reply:?}");
        parse_appenduid(&reply.status)
            .unwrap_or_else(|| panic!("no APPENDUID in {:?}", reply.status))
    }

    /// Every message's UID and FLAGS, read without changing them (EXAMINE).
    pub fn flags(&mut self, mailbox: &str) -> Vec<(u32, String)> {
        let examined = self.ok(&format!("EXAMINE {}", quoted(mailbox)));
        let empty = examined.untagged.iter().any(|line| line == "* 0 EXISTS");
        if empty {
            return Vec::new();
        }
        let reply = self.ok("UID FETCH 1:* (UID FLAGS)");
        reply
            .untagged
            .iter()
            .filter_map(|line| {
                let uid = line.split("UID ").nth(1)?.split([' ', ')']).next()?;
                let flags = line.split("FLAGS (").nth(1)?.split(')').next()?;
                Some((uid.parse().ok()?, flags.to_string()))
            })
            .collect()
    }

    pub fn uidvalidity(&mut self, mailbox: &str) -> u32 {
        let reply = self.ok(&format!("STATUS {} (UIDVALIDITY)", quoted(mailbox)));
        reply
            .untagged
            .iter()
            .find_map(|line| {
                line.split("UIDVALIDITY ")
                    .nth(1)?
                    .split(')')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no UIDVALIDITY in {reply:?}"))
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("h{}", self.tag)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("cannot write to dovecot: {e}"));
    }

    fn read_line(&mut self) -> String {
        let mut line = Vec::new();
        let read = self
            .reader
            .read_until(b'\n', &mut line)
            .unwrap_or_else(|e| panic!("cannot read from dovecot: {e}"));
        assert!(read > 0, "dovecot closed the connection");
        // A literal `{n}` continues the line after n raw bytes.
        while let Some(size) = literal_size(&line) {
            let mut literal = vec![0; size];
            self.reader
                .read_exact(&mut literal)
                .unwrap_or_else(|e| panic!("cannot read a literal from dovecot: {e}"));
            line.extend_from_slice(&literal);
            self.reader
                .read_until(b'\n', &mut line)
                .unwrap_or_else(|e| panic!("cannot read from dovecot: {e}"));
        }
        String::from_utf8_lossy(&line).trim_end().to_string()
    }

    fn read_reply(&mut self, tag: &str) -> Reply {
        let mut untagged = Vec::new();
        loop {
            let line = self.read_line();
            if let Some(status) = line.strip_prefix(&format!("{tag} ")) {
                return Reply {
                    untagged,
                    status: status.to_string(),
                };
            }
            untagged.push(line);
        }
    }
}

fn literal_size(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"\r\n")?.strip_suffix(b"}")?;
    let open = line.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&line[open + 1..]).ok()?.parse().ok()
}

fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn parse_appenduid(status: &str) -> Option<Appended> {
    let mut words = status.split("[APPENDUID ").nth(1)?.split([' ', ']']);
    Some(Appended {
        uidvalidity: words.next()?.parse().ok()?,
        uid: words.next()?.parse().ok()?,
    })
}

/// A TCP proxy to dovecot that cuts every connection after the server has
/// sent `cut_after` bytes on it, like a network failing mid-response.
pub struct CuttingProxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl CuttingProxy {
    pub fn start(target_port: u16, cut_after: usize) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("proxy cannot bind 127.0.0.1:0: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy socket has no address: {e}"))
            .port();
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("cannot make the proxy socket non-blocking: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        thread::spawn(move || forward(client, target_port, cut_after));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        CuttingProxy { port, stop }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn forward(client: TcpStream, target_port: u16, cut_after: usize) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let upstream = thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut server_out);
        let _ = server_out.shutdown(Shutdown::Write);
    });
    let mut server_in = server;
    let mut client_out = client;
    let mut sent = 0usize;
    let mut buffer = [0u8; 16 * 1024];
    while sent < cut_after {
        let read = match server_in.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let take = read.min(cut_after - sent);
        if client_out.write_all(&buffer[..take]).is_err() {
            break;
        }
        sent += take;
    }
    let _ = client_out.shutdown(Shutdown::Both);
    let _ = server_in.shutdown(Shutdown::Both);
    let _ = upstream.join();
}
