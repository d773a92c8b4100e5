//! Koji's dialect of XML-RPC, shared by patchline's Koji client and the hub
//! test double: the codec itself is `dxr` (with the `i8` and `nil`
//! extensions Koji relies on); this crate adds what Koji layers on top —
//! keyword arguments as a trailing `__starstar` struct, `multiCall` result
//! shapes, the numeric fault codes of `koji.GenericError` and friends, task
//! states, and the adler32 checksums of `rawUpload`.
//!
//! It must never hold policy of either side (what the worker retries, what
//! the hub fakes): only the wire. The real `koji` CLI run against the hub
//! double is what checks that this dialect is Koji's.

use std::collections::BTreeMap;

pub use dxr::{Fault, Value};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("malformed XML-RPC {what}: {message}")]
    Malformed { what: &'static str, message: String },
}

/// A Koji struct.
pub type Struct = BTreeMap<String, Value>;

/// Fault codes of Koji's exception classes (`koji/__init__.py`).
pub mod fault_code {
    pub const GENERIC: i32 = 1000;
    pub const LOCK: i32 = 1001;
    pub const AUTH: i32 = 1002;
    pub const ACTION_NOT_ALLOWED: i32 = 1004;
    pub const BUILD: i32 = 1005;
    pub const AUTH_EXPIRED: i32 = 1007;
    pub const SEQUENCE: i32 = 1008;
    pub const RETRY: i32 = 1009;
    pub const SERVER_OFFLINE: i32 = 1014;
    pub const PARAMETER: i32 = 1019;

    /// The Python class name a fault code stands for, as the koji CLI
    /// prints it.
    pub fn name(code: i32) -> &'static str {
        match code {
            LOCK => "LockError",
            AUTH => "AuthError",
            ACTION_NOT_ALLOWED => "ActionNotAllowed",
            BUILD => "BuildError",
            AUTH_EXPIRED => "AuthExpired",
            SEQUENCE => "SequenceError",
            RETRY => "RetryError",
            SERVER_OFFLINE => "ServerOffline",
            PARAMETER => "ParameterError",
            _ => "GenericError",
        }
    }
}

/// `koji.TASK_STATES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    Free = 0,
    Open = 1,
    Closed = 2,
    Canceled = 3,
    Assigned = 4,
    Failed = 5,
}

impl TaskState {
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Free,
            1 => Self::Open,
            2 => Self::Closed,
            3 => Self::Canceled,
            4 => Self::Assigned,
            5 => Self::Failed,
            _ => return None,
        })
    }
    pub fn code(self) -> i32 {
        self as i32
    }
    pub fn is_done(self) -> bool {
        matches!(self, Self::Closed | Self::Canceled | Self::Failed)
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Free => "FREE",
            Self::Open => "OPEN",
            Self::Closed => "CLOSED",
            Self::Canceled => "CANCELED",
            Self::Assigned => "ASSIGNED",
            Self::Failed => "FAILED",
        }
    }
}

/// `koji.BUILD_STATES`.
pub mod build_state {
    pub const BUILDING: i32 = 0;
    pub const COMPLETE: i32 = 1;
    pub const DELETED: i32 = 2;
    pub const FAILED: i32 = 3;
    pub const CANCELED: i32 = 4;
}

// ---- values ---------------------------------------------------------------

pub fn string(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

/// An integer as Python's marshaller writes it: `i4` when it fits, else the
/// `i8` extension (file sizes, offsets).
pub fn int(i: i64) -> Value {
    match i32::try_from(i) {
        Ok(small) => Value::Integer(small),
        Err(_) => Value::Long(i),
    }
}

pub fn structure<K: Into<String>>(members: impl IntoIterator<Item = (K, Value)>) -> Value {
    Value::Struct(members.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// `None` becomes `<nil/>`.
pub fn opt(v: Option<Value>) -> Value {
    v.unwrap_or(Value::Nil)
}

/// Typed, non-panicking reads of a dynamically typed value.
pub trait ValueExt {
    fn as_str(&self) -> Option<&str>;
    /// `i4`, `i8`, and integers sent as strings (Koji sends big ids so).
    fn as_i64(&self) -> Option<i64>;
    fn as_bool(&self) -> Option<bool>;
    fn as_struct(&self) -> Option<&Struct>;
    fn as_array(&self) -> Option<&[Value]>;
    fn as_bytes(&self) -> Option<&[u8]>;
    fn is_nil(&self) -> bool;
    /// A member of a struct.
    fn get(&self, key: &str) -> Option<&Value>;
}

impl ValueExt for Value {
    fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(i64::from(*i)),
            Value::Long(i) => Some(*i),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
    fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Boolean(b) => Some(*b),
            Value::Integer(i) => Some(*i != 0),
            _ => None,
        }
    }
    fn as_struct(&self) -> Option<&Struct> {
        match self {
            Value::Struct(s) => Some(s),
            _ => None,
        }
    }
    fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
    fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Base64(b) => Some(b),
            Value::String(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
    fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }
    fn get(&self, key: &str) -> Option<&Value> {
        self.as_struct().and_then(|s| s.get(key))
    }
}

// ---- calls and responses --------------------------------------------------

/// Positional arguments plus keyword arguments, encoded as Koji does
/// (`koji.encode_args`): a trailing struct with `__starstar: True`.
pub fn encode_args(mut args: Vec<Value>, kwargs: Struct) -> Vec<Value> {
    if !kwargs.is_empty() {
        let mut kw = kwargs;
        kw.insert("__starstar".into(), Value::Boolean(true));
        args.push(Value::Struct(kw));
    }
    args
}

/// The inverse of [`encode_args`] (`koji.decode_args`).
pub fn decode_args(mut args: Vec<Value>) -> (Vec<Value>, Struct) {
    let is_kwargs = args
        .last()
        .and_then(|v| v.get("__starstar"))
        .and_then(ValueExt::as_bool)
        .unwrap_or(false);
    if is_kwargs && let Some(Value::Struct(mut kw)) = args.pop() {
        kw.remove("__starstar");
        return (args, kw);
    }
    (args, Struct::new())
}

pub fn encode_call(name: &str, params: Vec<Value>) -> String {
    let call = dxr::MethodCall {
        name: name.into(),
        params,
    };
    // Serialising an in-memory value cannot fail for the value types we
    // build; an empty call would be rejected by the peer, never silently
    // accepted.
    xml_decl(call.to_xml().unwrap_or_default())
}

pub fn decode_call(body: &str) -> Result<(String, Vec<Value>), Error> {
    let call = dxr::MethodCall::from_xml(strip_decl(body)).map_err(|e| Error::Malformed {
        what: "call",
        message: short(&e.to_string()),
    })?;
    Ok((call.name.into_owned(), call.params))
}

pub fn encode_response(result: &Result<Value, Fault>) -> String {
    let xml = match result {
        Ok(value) => dxr::MethodResponse {
            value: value.clone(),
        }
        .to_xml(),
        Err(fault) => dxr::FaultResponse {
            fault: fault.clone(),
        }
        .to_xml(),
    };
    xml_decl(xml.unwrap_or_default())
}

/// A response: the value, or the fault the server answered with.
pub fn decode_response(body: &str) -> Result<Result<Value, Fault>, Error> {
    let body = strip_decl(body);
    if body.contains("<fault>") {
        return dxr::FaultResponse::from_xml(body)
            .map(|f| Err(f.fault))
            .map_err(|e| Error::Malformed {
                what: "fault",
                message: short(&e.to_string()),
            });
    }
    dxr::MethodResponse::from_xml(body)
        .map(|r| Ok(r.value))
        .map_err(|e| Error::Malformed {
            what: "response",
            message: short(&e.to_string()),
        })
}

/// `multiCall`'s argument: `[{methodName, params}, ...]`.
pub fn multicall_params(calls: Vec<(String, Vec<Value>)>) -> Vec<Value> {
    let list = calls
        .into_iter()
        .map(|(name, params)| {
            structure([
                ("methodName", Value::String(name)),
                ("params", Value::Array(params)),
            ])
        })
        .collect();
    vec![Value::Array(list)]
}

/// One entry of a `multiCall` result: `[value]` or a fault struct.
pub fn multicall_entry(entry: &Value) -> Result<Value, Fault> {
    match entry {
        Value::Array(a) if a.len() == 1 => Ok(a[0].clone()),
        Value::Struct(s) if s.contains_key("faultCode") => Err(Fault::new(
            s.get("faultCode")
                .and_then(ValueExt::as_i64)
                .and_then(|c| i32::try_from(c).ok())
                .unwrap_or(fault_code::GENERIC),
            s.get("faultString")
                .and_then(ValueExt::as_str)
                .unwrap_or("")
                .to_owned(),
        )),
        _ => Err(Fault::new(
            fault_code::GENERIC,
            "malformed multiCall entry".into(),
        )),
    }
}

pub fn multicall_result(results: Vec<Result<Value, Fault>>) -> Value {
    Value::Array(
        results
            .into_iter()
            .map(|r| match r {
                Ok(v) => Value::Array(vec![v]),
                Err(f) => structure([
                    ("faultCode", Value::Integer(f.code())),
                    ("faultString", string(f.string())),
                ]),
            })
            .collect(),
    )
}

fn xml_decl(xml: String) -> String {
    format!("<?xml version=\"1.0\"?>\n{xml}")
}

fn strip_decl(body: &str) -> &str {
    let body = body.trim_start_matches('\u{feff}').trim_start();
    if body.starts_with("<?xml")
        && let Some(end) = body.find("?>")
    {
        return body[end + 2..].trim_start();
    }
    body
}

fn short(s: &str) -> String {
    let mut s: String = s.chars().take(300).collect();
    if s.len() >= 300 {
        s.push('…');
    }
    s.replace('\n', " ")
}

// ---- uploads --------------------------------------------------------------

/// Koji's upload checksum (`koji.util.adler32_constructor`): zlib's adler32,
/// printed as 8 lower-case hex digits.
#[derive(Clone)]
pub struct Adler32(adler2::Adler32);

impl Default for Adler32 {
    fn default() -> Self {
        Self(adler2::Adler32::new())
    }
}

impl Adler32 {
    pub fn of(data: &[u8]) -> Self {
        let mut a = Self::default();
        a.update(data);
        a
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.write_slice(data);
    }
    pub fn hexdigest(&self) -> String {
        format!("{:08x}", self.0.checksum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Python's `xmlrpc.client.dumps` writes (with koji's i8 and
    /// allow_none), read back.
    #[test]
    fn reads_pythons_marshalling() {
        let body = "<?xml version='1.0'?>\n<methodCall>\n<methodName>build</methodName>\n<params>\n<param>\n<value><string>cli-build/x/a.src.rpm</string></value>\n</param>\n<param>\n<value><string></string></value>\n</param>\n<param>\n<value><struct>\n<member>\n<name>scratch</name>\n<value><boolean>1</boolean></value>\n</member>\n<member>\n<name>big</name>\n<value><i8>9000000000</i8></value>\n</member>\n<member>\n<name>none</name>\n<value><nil/></value>\n</member>\n<member>\n<name>n</name>\n<value><int>7</int></value>\n</member>\n<member>\n<name>__starstar</name>\n<value><boolean>1</boolean></value>\n</member>\n</struct></value>\n</param>\n</params>\n</methodCall>\n";
        let (name, params) = decode_call(body).unwrap();
        assert_eq!(name, "build");
        let (args, kw) = decode_args(params);
        assert_eq!(args.len(), 2);
        assert_eq!(args[0].as_str(), Some("cli-build/x/a.src.rpm"));
        assert_eq!(args[1].as_str(), Some(""));
        assert_eq!(kw["scratch"].as_bool(), Some(true));
        assert_eq!(kw["big"].as_i64(), Some(9_000_000_000));
        assert!(kw["none"].is_nil());
        assert_eq!(kw["n"].as_i64(), Some(7));
        assert!(!kw.contains_key("__starstar"));
    }

    #[test]
    fn call_without_params_and_garbage() {
        let (name, params) =
            decode_call("<methodCall><methodName>hello</methodName></methodCall>").unwrap();
        assert_eq!((name.as_str(), params.len()), ("hello", 0));
        for bad in ["", "<methodCall>", "garbage", "<a><b></a>", "\u{0}\u{1}"] {
            assert!(decode_call(bad).is_err(), "{bad:?}");
            assert!(decode_response(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn responses_and_faults_round_trip() {
        let v = structure([
            ("id", int(5)),
            ("size", int(1 << 40)),
            ("x", Value::Nil),
            ("s", string("a<b&c")),
        ]);
        assert_eq!(
            decode_response(&encode_response(&Ok(v.clone())))
                .unwrap()
                .unwrap(),
            v
        );
        let f = Fault::new(fault_code::AUTH, "bad password".into());
        let back = decode_response(&encode_response(&Err(f.clone()))).unwrap();
        assert_eq!(back.unwrap_err(), f);
        let m = multicall_result(vec![Ok(int(1)), Err(f.clone())]);
        let entries = m.as_array().unwrap();
        assert_eq!(multicall_entry(&entries[0]), Ok(int(1)));
        assert_eq!(multicall_entry(&entries[1]), Err(f));
    }

    #[test]
    fn adler32_as_koji_prints_it() {
        // python3 -c 'import zlib; print("%08x" % zlib.adler32(b"hello world"))'
        assert_eq!(Adler32::of(b"hello world").hexdigest(), "1a0b045d");
        assert_eq!(Adler32::default().hexdigest(), "00000001");
        let mut a = Adler32::of(b"hello ");
        a.update(b"world");
        assert_eq!(a.hexdigest(), "1a0b045d");
    }
}
