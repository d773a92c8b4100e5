//! A small HTTP/1.1 server (thread per connection, keep-alive,
//! Content-Length bodies): enough for python-requests and patchline's
//! client, and fully in our hands so faults can be injected at the byte
//! level (a connection dropped mid-body, a slow answer).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

const MAX_HEADER_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: u64 = 512 * 1024 * 1024;

pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// HEAD: announce the length, send no body.
    pub head_only: bool,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
            head_only: false,
        }
    }
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(
            status,
            "text/plain; charset=utf-8",
            body.into().into_bytes(),
        )
    }
}

/// What the handler decides to do with a request.
pub enum Action {
    Respond(Response),
    /// Close the connection without answering (an injected fault).
    Drop,
}

/// How the body of a request is to be read: `Some(n)` stops after `n`
/// bytes and drops the connection (an upload interrupted mid-chunk).
pub type BodyCut = Option<usize>;

pub trait Handler: Send + Sync + 'static {
    /// Called after the headers, before the body: may cut the body short.
    fn body_cut(&self, method: &str, path: &str, query: &[(String, String)]) -> BodyCut;
    fn handle(&self, req: Request) -> Action;
}

pub fn serve(listener: TcpListener, handler: Arc<dyn Handler>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let handler = handler.clone();
        std::thread::spawn(move || {
            let _ = connection(stream, handler.as_ref());
        });
    }
}

fn connection(stream: TcpStream, handler: &dyn Handler) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = Vec::new();
        // Request line and headers, up to the empty line.
        loop {
            let mut line = Vec::new();
            let n = reader
                .by_ref()
                .take((MAX_HEADER_BYTES - head.len().min(MAX_HEADER_BYTES)) as u64 + 1)
                .read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(());
            }
            if head.len() + line.len() > MAX_HEADER_BYTES {
                write_response(
                    &mut writer,
                    &Response::text(431, "headers too large"),
                    false,
                )?;
                return Ok(());
            }
            let blank = line == b"\r\n" || line == b"\n";
            head.extend_from_slice(&line);
            if blank {
                if head.len() == line.len() {
                    // Stray empty line between requests.
                    head.clear();
                    continue;
                }
                break;
            }
        }
        let text = String::from_utf8_lossy(&head);
        let mut lines = text.lines();
        let request_line = lines.next().unwrap_or("");
        let mut parts = request_line.split_whitespace();
        let (Some(method), Some(target), Some(version)) =
            (parts.next(), parts.next(), parts.next())
        else {
            write_response(&mut writer, &Response::text(400, "bad request line"), false)?;
            return Ok(());
        };
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let keep_alive = match header("Connection") {
            Some(v) if v.eq_ignore_ascii_case("close") => false,
            Some(v) if v.eq_ignore_ascii_case("keep-alive") => true,
            _ => version == "HTTP/1.1",
        };
        if header("Transfer-Encoding").is_some() {
            write_response(&mut writer, &Response::text(411, "length required"), false)?;
            return Ok(());
        }
        let length: u64 = match header("Content-Length").map(|v| v.parse::<u64>()) {
            None => 0,
            Some(Ok(n)) if n <= MAX_BODY_BYTES => n,
            _ => {
                write_response(
                    &mut writer,
                    &Response::text(413, "bad Content-Length"),
                    false,
                )?;
                return Ok(());
            }
        };
        let (path, query) = split_target(target);
        let mut body = Vec::with_capacity(length.min(16 << 20) as usize);
        if let Some(cut) = handler.body_cut(method, &path, &query) {
            let cut = (cut as u64).min(length);
            reader.by_ref().take(cut).read_to_end(&mut body)?;
            // Interrupted mid-body: the client sees a reset connection.
            return Ok(());
        }
        reader.by_ref().take(length).read_to_end(&mut body)?;
        if (body.len() as u64) < length {
            return Ok(());
        }
        let req = Request {
            method: method.to_owned(),
            path,
            query,
            headers,
            body,
        };
        match handler.handle(req) {
            Action::Drop => return Ok(()),
            Action::Respond(resp) => write_response(&mut writer, &resp, keep_alive)?,
        }
        if !keep_alive {
            return Ok(());
        }
    }
}

fn write_response(w: &mut TcpStream, resp: &Response, keep_alive: bool) -> std::io::Result<()> {
    let reason = match resp.status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        resp.status,
        resp.content_type,
        resp.body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    if !resp.head_only {
        w.write_all(&resp.body)?;
    }
    w.flush()
}

fn split_target(target: &str) -> (String, Vec<(String, String)>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    (percent_decode(path), query)
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding() {
        assert_eq!(super::percent_decode("a%2Fb+c%"), "a/b c%");
        assert_eq!(super::percent_decode("%zz%4"), "%zz%4");
        assert_eq!(super::percent_decode("%é1"), "%é1");
    }
}
