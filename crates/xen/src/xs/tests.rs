//! Client tests against an in-process peer over a socketpair: a small well-behaved store for
//! the happy paths, and scripted hostile peers that send malformed replies.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;

use super::wire::{self, Access, Decoder, Message, MsgType, Perm, WireError};
use super::*;

fn reply(m: &Message, ty: MsgType, payload: &[u8]) -> Vec<u8> {
    wire::encode(ty, m.req_id, m.tx_id, payload)
}

fn recv(s: &mut UnixStream, d: &mut Decoder) -> Option<Message> {
    loop {
        if let Some(m) = d.next_message().expect("client sent a bad frame") {
            return Some(m);
        }
        let mut b = [0u8; 4096];
        let n = s.read(&mut b).ok()?;
        if n == 0 {
            return None;
        }
        d.push(&b[..n]);
    }
}

/// A minimal xenstored: flat map of path -> value, perms, watches (exact or prefix match),
/// and `conflicts` commits that fail with EAGAIN before one succeeds.
fn fake_store(mut s: UnixStream, mut conflicts: u32) {
    let mut nodes: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut perms: BTreeMap<String, String> = BTreeMap::new();
    let mut watches: Vec<(String, String)> = Vec::new();
    let mut d = Decoder::new();
    while let Some(m) = recv(&mut s, &mut d) {
        let parts: Vec<&[u8]> = m.payload.split(|&b| b == 0).collect();
        let path = String::from_utf8_lossy(parts[0]).to_string();
        let mut fire = None;
        let out = match m.ty {
            MsgType::Read => match nodes.get(&path) {
                Some(v) => reply(&m, MsgType::Read, v),
                None => reply(&m, MsgType::Error, b"ENOENT\0"),
            },
            MsgType::Write => {
                let value = &m.payload[path.len() + 1..];
                nodes.insert(path.clone(), value.to_vec());
                fire = Some(path.clone());
                reply(&m, MsgType::Write, b"OK\0")
            }
            MsgType::Mkdir => {
                nodes.entry(path.clone()).or_default();
                reply(&m, MsgType::Mkdir, b"OK\0")
            }
            MsgType::Rm => {
                let prefix = format!("{path}/");
                nodes.retain(|k, _| k != &path && !k.starts_with(&prefix));
                fire = Some(path.clone());
                reply(&m, MsgType::Rm, b"OK\0")
            }
            MsgType::Directory
                if !nodes
                    .keys()
                    .any(|k| k == &path || k.starts_with(&format!("{path}/"))) =>
            {
                reply(&m, MsgType::Error, b"ENOENT\0")
            }
            MsgType::Directory => {
                let prefix = format!("{path}/");
                let mut kids: Vec<String> = nodes
                    .keys()
                    .filter_map(|k| k.strip_prefix(&prefix))
                    .map(|r| r.split('/').next().unwrap_or("").to_string())
                    .collect();
                kids.dedup();
                let mut p = Vec::new();
                for k in kids {
                    p.extend_from_slice(k.as_bytes());
                    p.push(0);
                }
                reply(&m, MsgType::Directory, &p)
            }
            MsgType::SetPerms => {
                let list: Vec<String> = parts[1..]
                    .iter()
                    .filter(|p| !p.is_empty())
                    .map(|p| String::from_utf8_lossy(p).to_string())
                    .collect();
                perms.insert(path.clone(), list.join("\0") + "\0");
                reply(&m, MsgType::SetPerms, b"OK\0")
            }
            MsgType::GetPerms => {
                let p = perms.get(&path).cloned().unwrap_or_else(|| "n0\0".into());
                reply(&m, MsgType::GetPerms, p.as_bytes())
            }
            MsgType::Watch => {
                let token = String::from_utf8_lossy(parts[1]).to_string();
                watches.push((path.clone(), token.clone()));
                let mut out = reply(&m, MsgType::Watch, b"OK\0");
                let ev = format!("{path}\0{token}\0");
                out.extend(wire::encode(MsgType::WatchEvent, 0, 0, ev.as_bytes()));
                out
            }
            MsgType::Unwatch => reply(&m, MsgType::Unwatch, b"OK\0"),
            MsgType::TransactionStart => reply(&m, MsgType::TransactionStart, b"17\0"),
            MsgType::TransactionEnd => {
                if m.tx_id != 17 {
                    reply(&m, MsgType::Error, b"ENOENT\0")
                } else if parts[0] == b"T" && conflicts > 0 {
                    conflicts -= 1;
                    reply(&m, MsgType::Error, b"EAGAIN\0")
                } else {
                    reply(&m, MsgType::TransactionEnd, b"OK\0")
                }
            }
            MsgType::GetDomainPath => reply(
                &m,
                MsgType::GetDomainPath,
                format!("/local/domain/{path}\0").as_bytes(),
            ),
            MsgType::IsDomainIntroduced => reply(&m, MsgType::IsDomainIntroduced, b"T\0"),
            MsgType::Introduce | MsgType::Release => reply(&m, m.ty, b"OK\0"),
            _ => reply(&m, MsgType::Error, b"EINVAL\0"),
        };
        if s.write_all(&out).is_err() {
            return;
        }
        if let Some(changed) = fire {
            for (w, token) in &watches {
                if changed == *w || changed.starts_with(&format!("{w}/")) {
                    let ev = format!("{changed}\0{token}\0");
                    let _ = s.write_all(&wire::encode(MsgType::WatchEvent, 0, 0, ev.as_bytes()));
                }
            }
        }
    }
}

pub(crate) fn sync_client(conflicts: u32) -> XsClient<UnixStream> {
    let (a, b) = UnixStream::pair().unwrap();
    thread::spawn(move || fake_store(b, conflicts));
    XsClient::new(a)
}

/// A peer that answers the first request with `raw` bytes (the header's req_id is patched
/// to the request's unless `keep_req_id`).
fn hostile(raw: Vec<u8>, keep_req_id: bool) -> UnixStream {
    let (a, mut b) = UnixStream::pair().unwrap();
    thread::spawn(move || {
        let mut d = Decoder::new();
        if let Some(m) = recv(&mut b, &mut d) {
            let mut raw = raw;
            if !keep_req_id && raw.len() >= 8 {
                raw[4..8].copy_from_slice(&m.req_id.to_le_bytes());
            }
            let _ = b.write_all(&raw);
            // Keep the socket open long enough for the client to read.
            let mut sink = [0u8; 64];
            let _ = b.read(&mut sink);
        }
    });
    a
}

fn hdr(ty: u32, req: u32, len: u32) -> Vec<u8> {
    [ty, req, 0, len]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

#[test]
fn sync_read_write_mkdir_rm_directory() {
    let mut xs = sync_client(0);
    assert_eq!(xs.read("/a/b").unwrap(), None);
    xs.write("/a/b", b"hello").unwrap();
    xs.write("/a/c", b"\x00binary\xff").unwrap();
    assert_eq!(xs.read_string("/a/b").unwrap().as_deref(), Some("hello"));
    assert_eq!(xs.read("/a/c").unwrap().unwrap(), b"\x00binary\xff");
    xs.mkdir("/a/d").unwrap();
    let mut dir = xs.directory("/a").unwrap().unwrap();
    dir.sort();
    assert_eq!(dir, vec!["b", "c", "d"]);
    xs.rm("/a").unwrap();
    assert_eq!(xs.read("/a/b").unwrap(), None);
    xs.rm("/never/existed").unwrap();
    assert_eq!(xs.get_domain_path(5).unwrap(), "/local/domain/5");
    assert!(xs.is_domain_introduced(5).unwrap());
    xs.introduce(5, 0x1234, 3).unwrap();
}

#[test]
fn sync_perms_roundtrip() {
    let mut xs = sync_client(0);
    let p = [Perm::new(0, Access::None), Perm::new(5, Access::Read)];
    xs.set_perms("/x", &p).unwrap();
    assert_eq!(xs.get_perms("/x").unwrap(), p);
}

#[test]
fn sync_transaction_retries_on_eagain() {
    let mut xs = sync_client(2);
    let mut runs = 0;
    xs.transaction(|tx| {
        runs += 1;
        tx.write("/t/k", b"v")
    })
    .unwrap();
    assert_eq!(runs, 3, "two conflicts, then a commit");
    let mut xs = sync_client(100);
    let err = xs.transaction(|tx| tx.write("/t/k", b"v")).unwrap_err();
    assert!(matches!(err, XenError::XsTransactionRetries(16)), "{err}");
}

#[test]
fn sync_watch_events_are_queued_across_requests() {
    let mut xs = sync_client(0);
    xs.watch("/w", "tok1").unwrap();
    xs.watch("@releaseDomain", "rel").unwrap();
    xs.write("/w/x", b"1").unwrap();
    let evs: Vec<_> = (0..3).map(|_| xs.next_watch_event().unwrap()).collect();
    assert_eq!(
        evs[0],
        WatchEvent {
            path: "/w".into(),
            token: "tok1".into()
        }
    );
    assert_eq!(
        evs[1],
        WatchEvent {
            path: "@releaseDomain".into(),
            token: "rel".into()
        }
    );
    assert_eq!(
        evs[2],
        WatchEvent {
            path: "/w/x".into(),
            token: "tok1".into()
        }
    );
}

#[test]
fn requests_are_validated_before_sending() {
    let mut xs = sync_client(0);
    assert!(matches!(xs.read("relative"), Err(XenError::XsBadPath(_))));
    assert!(matches!(
        xs.write("/a//b", b""),
        Err(XenError::XsBadPath(_))
    ));
    let big = vec![b'x'; 5000];
    assert!(matches!(
        xs.write("/a", &big),
        Err(XenError::XsRequestTooLong {
            op: "write",
            len: 5003,
            ..
        })
    ));
    assert!(matches!(
        xs.watch("/a", "to\0k"),
        Err(XenError::InvalidArgument(_))
    ));
}

#[test]
fn hostile_oversize_length() {
    let mut xs = XsClient::new(hostile(hdr(2, 0, 4097), false));
    let err = xs.read("/a").unwrap_err();
    assert!(
        matches!(err, XenError::XsProtocol(WireError::TooLong(4097))),
        "{err}"
    );
}

#[test]
fn hostile_unknown_type() {
    let mut xs = XsClient::new(hostile(hdr(999, 0, 0), false));
    let err = xs.read("/a").unwrap_err();
    assert!(
        matches!(err, XenError::XsProtocol(WireError::UnknownType(999))),
        "{err}"
    );
}

#[test]
fn hostile_wrong_req_id() {
    let mut xs = XsClient::new(hostile(hdr(2, 4242, 0), true));
    let err = xs.read("/a").unwrap_err();
    assert!(
        matches!(
            err,
            XenError::XsProtocol(WireError::UnexpectedReqId { want: 1, got: 4242 })
        ),
        "{err}"
    );
}

#[test]
fn hostile_wrong_reply_type() {
    let mut xs = XsClient::new(hostile(hdr(11, 0, 0), false));
    let err = xs.read("/a").unwrap_err();
    assert!(
        matches!(
            err,
            XenError::XsProtocol(WireError::UnexpectedType {
                want: MsgType::Read,
                got: MsgType::Write
            })
        ),
        "{err}"
    );
}

#[test]
fn hostile_non_utf8_directory() {
    let mut raw = hdr(1, 0, 3);
    raw.extend_from_slice(b"\xff\xfe\0");
    let mut xs = XsClient::new(hostile(raw, false));
    let err = xs.directory("/a").unwrap_err();
    assert!(
        matches!(err, XenError::XsProtocol(WireError::NotUtf8)),
        "{err}"
    );
}

#[test]
fn hostile_error_strings() {
    let mut raw = hdr(16, 0, 7);
    raw.extend_from_slice(b"EACCES\0");
    let mut xs = XsClient::new(hostile(raw, false));
    let err = xs.write("/a", b"1").unwrap_err();
    assert!(
        matches!(&err, XenError::Xs { op: "write", errno, .. } if errno == "EACCES"),
        "{err}"
    );
    assert!(err.to_string().contains("EACCES"));

    let mut raw = hdr(16, 0, 12);
    raw.extend_from_slice(b"rm -rf /*;\0\0");
    let mut xs = XsClient::new(hostile(raw, false));
    let err = xs.write("/a", b"1").unwrap_err();
    assert!(
        matches!(
            err,
            XenError::XsProtocol(WireError::BadValue { what: "ERROR", .. })
        ),
        "{err}"
    );
}

#[test]
fn hostile_truncated_and_closed() {
    let mut raw = hdr(2, 0, 100);
    raw.extend_from_slice(b"short");
    let (a, mut b) = UnixStream::pair().unwrap();
    thread::spawn(move || {
        let mut d = Decoder::new();
        if let Some(m) = recv(&mut b, &mut d) {
            raw[4..8].copy_from_slice(&m.req_id.to_le_bytes());
            let _ = b.write_all(&raw);
        } // dropped: connection closes mid-message
    });
    let mut xs = XsClient::new(a);
    let err = xs.read("/a").unwrap_err();
    assert!(
        matches!(err, XenError::XsProtocol(WireError::Truncated)),
        "{err}"
    );

    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    let mut xs = XsClient::new(a);
    assert!(matches!(
        xs.read("/a"),
        Err(XenError::XsClosed) | Err(XenError::XsIo(_))
    ));
}

fn async_client(conflicts: u32) -> AsyncXs {
    let (a, b) = UnixStream::pair().unwrap();
    thread::spawn(move || fake_store(b, conflicts));
    a.set_nonblocking(true).unwrap();
    AsyncXs::from_stream(tokio::net::UnixStream::from_std(a).unwrap())
}

#[tokio::test]
async fn async_concurrent_requests_and_watch() {
    let xs = async_client(0);
    let mut w = xs.watch("/w").await.unwrap();
    assert_eq!(w.next().await.unwrap().path, "/w");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let xs = xs.clone();
        tasks.push(tokio::spawn(async move {
            let p = format!("/w/k{i}");
            xs.write(&p, i.to_string().as_bytes()).await.unwrap();
            xs.read_string(&p).await.unwrap().unwrap()
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), i.to_string());
    }
    let mut seen = 0;
    while seen < 20 {
        let ev = w.next().await.unwrap();
        assert!(ev.path.starts_with("/w/k"), "{ev:?}");
        seen += 1;
    }
}

#[tokio::test]
async fn async_transaction_retries_and_perms() {
    let xs = async_client(1);
    let mut runs = 0;
    xs.transaction(|tx| {
        runs += 1;
        Box::pin(async move { tx.write("/t", b"1").await })
    })
    .await
    .unwrap();
    assert_eq!(runs, 2);
    let p = [Perm::new(0, Access::Both), Perm::new(3, Access::Write)];
    xs.set_perms("/t", &p).await.unwrap();
    assert_eq!(xs.get_perms("/t").await.unwrap(), p);
    assert_eq!(xs.directory("/nope").await.unwrap(), None);
}

#[tokio::test]
async fn async_protocol_violation_fails_pending_and_later_requests() {
    let s = hostile(hdr(2, 0, 9000), false);
    s.set_nonblocking(true).unwrap();
    let xs = AsyncXs::from_stream(tokio::net::UnixStream::from_std(s).unwrap());
    let err = xs.read("/a").await.unwrap_err();
    assert!(
        matches!(err, XenError::XsProtocol(WireError::TooLong(9000))),
        "{err}"
    );
    let err = xs.read("/b").await.unwrap_err();
    assert!(
        matches!(err, XenError::XsProtocol(WireError::TooLong(9000))),
        "{err}"
    );
}

#[tokio::test]
async fn async_unsolicited_reply_is_a_violation() {
    let s = hostile(hdr(2, 777, 0), true);
    s.set_nonblocking(true).unwrap();
    let xs = AsyncXs::from_stream(tokio::net::UnixStream::from_std(s).unwrap());
    let err = xs.read("/a").await.unwrap_err();
    assert!(
        matches!(
            err,
            XenError::XsProtocol(WireError::UnexpectedReqId { got: 777, .. })
        ),
        "{err}"
    );
}
