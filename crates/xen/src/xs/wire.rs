//! The xenstore wire protocol (`xen/include/public/io/xs_wire.h`, `docs/misc/xenstore.txt`):
//! a 16-byte header (type, req_id, tx_id, len; native endian, little on x86) and at most
//! 4096 payload bytes. Everything here is pure and bounded: replies come from another
//! process and are parsed as untrusted input.

/// `XENSTORE_PAYLOAD_MAX`.
pub const PAYLOAD_MAX: usize = 4096;
/// `XENSTORE_ABS_PATH_MAX`.
pub const ABS_PATH_MAX: usize = 3072;
/// Size of `struct xsd_sockmsg`.
pub const HEADER_LEN: usize = 16;

/// `enum xsd_sockmsg_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MsgType {
    Control = 0,
    Directory = 1,
    Read = 2,
    GetPerms = 3,
    Watch = 4,
    Unwatch = 5,
    TransactionStart = 6,
    TransactionEnd = 7,
    Introduce = 8,
    Release = 9,
    GetDomainPath = 10,
    Write = 11,
    Mkdir = 12,
    Rm = 13,
    SetPerms = 14,
    WatchEvent = 15,
    Error = 16,
    IsDomainIntroduced = 17,
    Resume = 18,
    SetTarget = 19,
    ResetWatches = 21,
    DirectoryPart = 22,
}

impl MsgType {
    pub fn from_u32(v: u32) -> Option<Self> {
        use MsgType::*;
        Some(match v {
            0 => Control,
            1 => Directory,
            2 => Read,
            3 => GetPerms,
            4 => Watch,
            5 => Unwatch,
            6 => TransactionStart,
            7 => TransactionEnd,
            8 => Introduce,
            9 => Release,
            10 => GetDomainPath,
            11 => Write,
            12 => Mkdir,
            13 => Rm,
            14 => SetPerms,
            15 => WatchEvent,
            16 => Error,
            17 => IsDomainIntroduced,
            18 => Resume,
            19 => SetTarget,
            21 => ResetWatches,
            22 => DirectoryPart,
            _ => return None,
        })
    }
}

/// A reply that breaks the protocol. Each is fatal for the connection's framing or for the
/// one request it answers, never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("payload length {0} exceeds 4096")]
    TooLong(u32),
    #[error("unknown message type {0}")]
    UnknownType(u32),
    #[error("reply to request {got} while waiting for {want}")]
    UnexpectedReqId { want: u32, got: u32 },
    #[error("reply of type {got:?} to a {want:?} request")]
    UnexpectedType { want: MsgType, got: MsgType },
    #[error("payload is not UTF-8")]
    NotUtf8,
    #[error("malformed watch event")]
    BadWatchEvent,
    #[error("malformed permission {0:?}")]
    BadPerm(String),
    #[error("malformed {what} reply {value:?}")]
    BadValue { what: &'static str, value: String },
    #[error("connection closed in the middle of a message")]
    Truncated,
}

/// A decoded message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub ty: MsgType,
    pub req_id: u32,
    pub tx_id: u32,
    pub len: u32,
}

impl Header {
    /// Parses and bounds-checks a header.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Self, WireError> {
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let (ty, req_id, tx_id, len) = (word(0), word(4), word(8), word(12));
        if len as usize > PAYLOAD_MAX {
            return Err(WireError::TooLong(len));
        }
        let ty = MsgType::from_u32(ty).ok_or(WireError::UnknownType(ty))?;
        Ok(Self {
            ty,
            req_id,
            tx_id,
            len,
        })
    }
}

/// A whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub ty: MsgType,
    pub req_id: u32,
    pub tx_id: u32,
    pub payload: Vec<u8>,
}

/// Encodes a request. The caller has checked `payload.len() <= PAYLOAD_MAX`.
pub fn encode(ty: MsgType, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&(ty as u32).to_le_bytes());
    out.extend_from_slice(&req_id.to_le_bytes());
    out.extend_from_slice(&tx_id.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Incremental decoder for a byte stream of messages.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// True if part of a message is buffered.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next complete message, `Ok(None)` if more bytes are needed. A header error leaves
    /// the stream unusable (its framing is lost).
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        let Some(hb) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(hb);
        let header = Header::parse(&h)?;
        let total = HEADER_LEN + header.len as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..total].to_vec();
        self.buf.drain(..total);
        Ok(Some(Message {
            ty: header.ty,
            req_id: header.req_id,
            tx_id: header.tx_id,
            payload,
        }))
    }
}

/// A reply payload as one string: the value without a trailing NUL, UTF-8.
pub fn parse_string(payload: &[u8]) -> Result<String, WireError> {
    let s = payload.strip_suffix(&[0]).unwrap_or(payload);
    String::from_utf8(s.to_vec()).map_err(|_| WireError::NotUtf8)
}

/// A reply payload of NUL-terminated strings (DIRECTORY, GET_PERMS).
pub fn parse_list(payload: &[u8]) -> Result<Vec<String>, WireError> {
    if payload.is_empty() {
        return Ok(Vec::new());
    }
    let body = payload.strip_suffix(&[0]).unwrap_or(payload);
    body.split(|&b| b == 0)
        .map(|s| String::from_utf8(s.to_vec()).map_err(|_| WireError::NotUtf8))
        .collect()
}

/// `WATCH_EVENT` payload: `<epath>|<token>|`.
pub fn parse_watch_event(payload: &[u8]) -> Result<(String, String), WireError> {
    let mut parts = payload.split(|&b| b == 0);
    let path = parts.next().ok_or(WireError::BadWatchEvent)?;
    let token = parts.next().ok_or(WireError::BadWatchEvent)?;
    if path.is_empty() {
        return Err(WireError::BadWatchEvent);
    }
    let s = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| WireError::NotUtf8);
    Ok((s(path)?, s(token)?))
}

/// The `E<something>` name of an ERROR reply, bounded to a sane errno name.
pub fn parse_error(payload: &[u8]) -> Result<String, WireError> {
    let s = parse_string(payload)?;
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(WireError::BadValue {
            what: "ERROR",
            value: s.chars().take(64).collect(),
        });
    }
    Ok(s)
}

/// One node permission entry: `n`, `r`, `w` or `b` followed by a domid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perm {
    pub domid: u16,
    pub access: Access,
}

/// What a permission entry allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    None,
    Read,
    Write,
    Both,
}

impl Perm {
    pub fn new(domid: u16, access: Access) -> Self {
        Self { domid, access }
    }

    pub fn encode(&self) -> String {
        let c = match self.access {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        };
        format!("{c}{}", self.domid)
    }

    pub fn parse(s: &str) -> Result<Self, WireError> {
        let bad = || WireError::BadPerm(s.chars().take(64).collect());
        let mut chars = s.chars();
        let access = match chars.next() {
            Some('n') => Access::None,
            Some('r') => Access::Read,
            Some('w') => Access::Write,
            Some('b') => Access::Both,
            _ => return Err(bad()),
        };
        let rest = chars.as_str();
        if rest.is_empty() || rest.len() > 5 || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let domid = rest.parse::<u16>().map_err(|_| bad())?;
        Ok(Self { domid, access })
    }
}

/// GET_PERMS reply: the first entry is the owner (its access is what everyone else not
/// listed gets).
pub fn parse_perms(payload: &[u8]) -> Result<Vec<Perm>, WireError> {
    let list = parse_list(payload)?;
    if list.is_empty() {
        return Err(WireError::BadPerm(String::new()));
    }
    list.iter().map(|s| Perm::parse(s)).collect()
}

/// `T` / `F` replies (IS_DOMAIN_INTRODUCED).
pub fn parse_bool(payload: &[u8]) -> Result<bool, WireError> {
    match parse_string(payload)?.as_str() {
        "T" => Ok(true),
        "F" => Ok(false),
        other => Err(WireError::BadValue {
            what: "boolean",
            value: other.chars().take(64).collect(),
        }),
    }
}

/// TRANSACTION_START reply: a decimal u32, nonzero.
pub fn parse_tx_id(payload: &[u8]) -> Result<u32, WireError> {
    let s = parse_string(payload)?;
    match s.parse::<u32>() {
        Ok(id) if id != 0 => Ok(id),
        _ => Err(WireError::BadValue {
            what: "transaction id",
            value: s.chars().take(64).collect(),
        }),
    }
}

/// Validates a path we send: absolute (or a `@` special watch path), no empty segments, the
/// xenstore character set, within `ABS_PATH_MAX`.
pub fn valid_path(path: &str) -> bool {
    if path.len() > ABS_PATH_MAX || path.is_empty() {
        return false;
    }
    if let Some(special) = path.strip_prefix('@') {
        return !special.is_empty()
            && special
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_/".contains(&b));
    }
    if path == "/" {
        return true;
    }
    path.starts_with('/')
        && !path.ends_with('/')
        && !path.contains("//")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-/_@".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ty: u32, req: u32, tx: u32, len: u32) -> Vec<u8> {
        [ty, req, tx, len]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect()
    }

    #[test]
    fn encodes_header_little_endian() {
        let m = encode(MsgType::Read, 7, 3, b"/a\0");
        assert_eq!(&m[..16], &header(2, 7, 3, 3)[..]);
        assert_eq!(&m[16..], b"/a\0");
    }

    #[test]
    fn decoder_handles_split_and_batched_frames() {
        let mut d = Decoder::new();
        let mut bytes = encode(MsgType::Read, 1, 0, b"one");
        bytes.extend(encode(MsgType::WatchEvent, 0, 0, b"/p\0tok\0"));
        d.push(&bytes[..10]);
        assert_eq!(d.next_message().unwrap(), None);
        d.push(&bytes[10..]);
        let a = d.next_message().unwrap().unwrap();
        assert_eq!(
            (a.ty, a.req_id, a.payload.as_slice()),
            (MsgType::Read, 1, &b"one"[..])
        );
        let b = d.next_message().unwrap().unwrap();
        assert_eq!(
            parse_watch_event(&b.payload).unwrap(),
            ("/p".into(), "tok".into())
        );
        assert_eq!(d.next_message().unwrap(), None);
        assert!(!d.has_partial());
    }

    #[test]
    fn hostile_headers() {
        let mut d = Decoder::new();
        d.push(&header(2, 1, 0, 4097));
        assert_eq!(d.next_message(), Err(WireError::TooLong(4097)));
        let mut d = Decoder::new();
        d.push(&header(u32::MAX, 1, 0, 0));
        assert_eq!(d.next_message(), Err(WireError::UnknownType(u32::MAX)));
        let mut d = Decoder::new();
        d.push(&header(20, 1, 0, 0)); // 20 was XS_RESTRICT, removed
        assert_eq!(d.next_message(), Err(WireError::UnknownType(20)));
    }

    #[test]
    fn hostile_payloads() {
        assert_eq!(parse_string(b"\xff\xfe"), Err(WireError::NotUtf8));
        assert_eq!(parse_list(b"a\0\xff\0"), Err(WireError::NotUtf8));
        assert_eq!(
            parse_watch_event(b"onlypath"),
            Err(WireError::BadWatchEvent)
        );
        assert_eq!(parse_watch_event(b"\0tok\0"), Err(WireError::BadWatchEvent));
        assert!(matches!(
            parse_error(b"not an errno!\0"),
            Err(WireError::BadValue { .. })
        ));
        assert_eq!(parse_error(b"ENOENT\0").unwrap(), "ENOENT");
        assert!(matches!(
            parse_tx_id(b"0\0"),
            Err(WireError::BadValue { .. })
        ));
        assert!(matches!(
            parse_tx_id(b"-5\0"),
            Err(WireError::BadValue { .. })
        ));
        assert_eq!(parse_tx_id(b"42\0").unwrap(), 42);
        assert!(matches!(
            parse_bool(b"maybe\0"),
            Err(WireError::BadValue { .. })
        ));
        assert_eq!(parse_perms(b""), Err(WireError::BadPerm(String::new())));
        assert_eq!(parse_perms(b"x5\0"), Err(WireError::BadPerm("x5".into())));
        assert_eq!(
            parse_perms(b"r99999\0"),
            Err(WireError::BadPerm("r99999".into()))
        );
        assert_eq!(parse_perms(b"r\0"), Err(WireError::BadPerm("r".into())));
    }

    #[test]
    fn lists_and_perms() {
        assert_eq!(parse_list(b"").unwrap(), Vec::<String>::new());
        assert_eq!(parse_list(b"a\0b\0").unwrap(), vec!["a", "b"]);
        let p = parse_perms(b"n0\0r5\0b7\0").unwrap();
        assert_eq!(
            p,
            vec![
                Perm::new(0, Access::None),
                Perm::new(5, Access::Read),
                Perm::new(7, Access::Both)
            ]
        );
        assert_eq!(Perm::new(3, Access::Write).encode(), "w3");
    }

    #[test]
    fn path_validation() {
        for ok in [
            "/",
            "/local/domain/0",
            "@releaseDomain",
            "@introduceDomain",
            "/vm/a-b_c",
        ] {
            assert!(valid_path(ok), "{ok}");
        }
        for bad in ["", "rel/path", "/a//b", "/a/", "/a b", "/a\0b", "@", "/é"] {
            assert!(!valid_path(bad), "{bad:?}");
        }
        assert!(!valid_path(&format!("/{}", "a".repeat(3072))));
    }
}
