//! A bounded HTTP load generator for `patchline serve` (used by
//! scripts/bench-serve.sh): a fixed number of keep-alive connections, each
//! sending GETs one after another for a fixed time, cycling over the given
//! paths. Prints one JSON object: requests, errors, requests/s, latency
//! percentiles.
//!
//! bench_serve --addr 127.0.0.1:8080 --token-file F --connections 4 \
//!     --seconds 5 --path /api/v1/runs/1 [--path ...]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

struct Args {
    addr: String,
    token: String,
    connections: usize,
    seconds: f64,
    paths: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: String::new(),
        token: String::new(),
        connections: 4,
        seconds: 5.0,
        paths: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => args.addr = value,
            "--token-file" => {
                args.token = std::fs::read_to_string(&value)
                    .map_err(|e| format!("{value}: {e}"))?
                    .trim()
                    .to_owned()
            }
            "--connections" => args.connections = value.parse().map_err(|_| "bad --connections")?,
            "--seconds" => args.seconds = value.parse().map_err(|_| "bad --seconds")?,
            "--path" => args.paths.push(value),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.addr.is_empty() || args.paths.is_empty() {
        return Err("--addr and --path are required".into());
    }
    Ok(args)
}

/// One GET on a keep-alive connection; the status.
fn get(conn: &mut BufReader<TcpStream>, request: &[u8]) -> std::io::Result<u16> {
    conn.get_mut().write_all(request)?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body)?;
    Ok(status)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_serve: {e}");
            std::process::exit(2);
        }
    };
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.connections)
        .map(|i| {
            let requests: Vec<Vec<u8>> = args
                .paths
                .iter()
                .map(|p| {
                    format!(
                        "GET {p} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
                        args.addr, args.token
                    )
                    .into_bytes()
                })
                .collect();
            let addr = args.addr.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut conn = None;
                let mut n = i;
                while Instant::now() < deadline {
                    let c = match conn.take() {
                        Some(c) => c,
                        None => match TcpStream::connect(&addr) {
                            Ok(s) => BufReader::new(s),
                            Err(_) => {
                                errors += 1;
                                continue;
                            }
                        },
                    };
                    let mut c = c;
                    let t = Instant::now();
                    match get(&mut c, &requests[n % requests.len()]) {
                        Ok(200) => {
                            latencies.push(t.elapsed());
                            conn = Some(c);
                        }
                        Ok(_) => {
                            errors += 1;
                            conn = Some(c);
                        }
                        Err(_) => errors += 1,
                    }
                    n += 1;
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.join().unwrap_or_default();
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{{\"requests\": {}, \"errors\": {errors}, \"seconds\": {elapsed:.2}, \"rps\": {:.0}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}}}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
}
