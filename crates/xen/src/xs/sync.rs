//! Blocking xenstore client over any byte stream (the xenstored socket, `/dev/xen/xenbus`,
//! or a socketpair in tests). One request is in flight at a time; watch events that arrive
//! while waiting for a reply are queued for [`XsClient::next_watch_event`].

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::wire::{self, Decoder, Message, MsgType, Perm, WireError};
use super::{Transport, WatchEvent, request_payload};
use crate::{DomId, Result, XenError};

/// How many times [`XsClient::transaction`] retries a transaction that hit EAGAIN.
pub const TRANSACTION_RETRIES: u32 = 16;
/// Bound on queued watch events; beyond it the oldest are dropped (watches may be spurious
/// or coalesced by definition, so consumers re-read state on each event).
pub const MAX_QUEUED_EVENTS: usize = 4096;

/// A blocking xenstore connection.
#[derive(Debug)]
pub struct XsClient<T: Read + Write = Transport> {
    io: T,
    decoder: Decoder,
    next_req: u32,
    events: VecDeque<WatchEvent>,
}

impl XsClient<Transport> {
    /// Connects to xenstored: its socket (`XENSTORED_PATH` or `/run/xenstored/socket`), else
    /// `/dev/xen/xenbus`.
    pub fn open() -> Result<Self> {
        Ok(Self::new(Transport::connect()?))
    }
}

impl XsClient<UnixStream> {
    /// Sets a timeout for each blocking read of a reply.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> Result<()> {
        self.io.set_read_timeout(t).map_err(XenError::XsIo)
    }
}

impl<T: Read + Write> XsClient<T> {
    /// Wraps an already-connected stream.
    pub fn new(io: T) -> Self {
        Self {
            io,
            decoder: Decoder::new(),
            next_req: 1,
            events: VecDeque::new(),
        }
    }

    fn read_message(&mut self) -> Result<Message> {
        loop {
            if let Some(m) = self.decoder.next_message()? {
                return Ok(m);
            }
            let mut buf = [0u8; 4096];
            let n = match self.io.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(XenError::XsIo(e)),
            };
            if n == 0 {
                return Err(if self.decoder.has_partial() {
                    XenError::XsProtocol(WireError::Truncated)
                } else {
                    XenError::XsClosed
                });
            }
            self.decoder.push(&buf[..n]);
        }
    }

    fn queue_event(&mut self, m: &Message) -> Result<()> {
        let (path, token) = wire::parse_watch_event(&m.payload)?;
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(WatchEvent { path, token });
        Ok(())
    }

    /// Sends one request and returns its reply payload; an ERROR reply becomes
    /// [`XenError::Xs`] with the errno name.
    fn request(&mut self, op: MsgType, tx: u32, path: &str, parts: &[&[u8]]) -> Result<Vec<u8>> {
        let payload = request_payload(op, path, parts)?;
        let req_id = self.next_req;
        self.next_req = self.next_req.wrapping_add(1).max(1);
        let frame = wire::encode(op, req_id, tx, &payload);
        self.io.write_all(&frame).map_err(XenError::XsIo)?;
        loop {
            let m = self.read_message()?;
            if m.ty == MsgType::WatchEvent {
                self.queue_event(&m)?;
                continue;
            }
            if m.req_id != req_id {
                return Err(WireError::UnexpectedReqId {
                    want: req_id,
                    got: m.req_id,
                }
                .into());
            }
            return reply_payload(op, path, m);
        }
    }

    fn read_in(&mut self, tx: u32, path: &str) -> Result<Option<Vec<u8>>> {
        match self.request(MsgType::Read, tx, path, &[]) {
            Ok(v) => Ok(Some(v)),
            Err(XenError::Xs { errno, .. }) if errno == "ENOENT" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a node's value; `None` if it does not exist.
    pub fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>> {
        self.read_in(0, path)
    }

    /// Reads a node's value as UTF-8; `None` if it does not exist.
    pub fn read_string(&mut self, path: &str) -> Result<Option<String>> {
        self.read(path)?
            .map(|v| wire::parse_string(&v).map_err(Into::into))
            .transpose()
    }

    /// Writes a value, creating missing parents.
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<()> {
        self.request(MsgType::Write, 0, path, &[value]).map(drop)
    }

    /// Creates a node (and parents) if missing.
    pub fn mkdir(&mut self, path: &str) -> Result<()> {
        self.request(MsgType::Mkdir, 0, path, &[]).map(drop)
    }

    /// Removes a node and its children; a missing node is not an error.
    pub fn rm(&mut self, path: &str) -> Result<()> {
        rm_result(self.request(MsgType::Rm, 0, path, &[]))
    }

    /// Lists a node's children (leaf names); `None` if it does not exist.
    pub fn directory(&mut self, path: &str) -> Result<Option<Vec<String>>> {
        match self.request(MsgType::Directory, 0, path, &[]) {
            Ok(v) => Ok(Some(wire::parse_list(&v)?)),
            Err(XenError::Xs { errno, .. }) if errno == "ENOENT" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A node's permissions (owner first).
    pub fn get_perms(&mut self, path: &str) -> Result<Vec<Perm>> {
        let v = self.request(MsgType::GetPerms, 0, path, &[])?;
        Ok(wire::parse_perms(&v)?)
    }

    /// Sets a node's permissions; the first entry is the owner.
    pub fn set_perms(&mut self, path: &str, perms: &[Perm]) -> Result<()> {
        let enc: Vec<String> = perms.iter().map(Perm::encode).collect();
        let parts: Vec<&[u8]> = enc.iter().map(|s| s.as_bytes()).collect();
        self.request(MsgType::SetPerms, 0, path, &parts).map(drop)
    }

    /// Adds a watch on `path` (or `@releaseDomain`/`@introduceDomain`) with `token`. The
    /// watch fires once straight away.
    pub fn watch(&mut self, path: &str, token: &str) -> Result<()> {
        self.request(MsgType::Watch, 0, path, &[token.as_bytes()])
            .map(drop)
    }

    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<()> {
        self.request(MsgType::Unwatch, 0, path, &[token.as_bytes()])
            .map(drop)
    }

    /// The next watch event, waiting for one if none is queued.
    pub fn next_watch_event(&mut self) -> Result<WatchEvent> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(e);
            }
            let m = self.read_message()?;
            if m.ty != MsgType::WatchEvent {
                return Err(WireError::UnexpectedType {
                    want: MsgType::WatchEvent,
                    got: m.ty,
                }
                .into());
            }
            self.queue_event(&m)?;
        }
    }

    /// Tells xenstored about a new domain's store ring (`INTRODUCE`).
    pub fn introduce(&mut self, domid: DomId, store_mfn: u64, store_port: u32) -> Result<()> {
        let (d, m, p) = (
            domid.to_string(),
            (store_mfn as i64).to_string(),
            store_port.to_string(),
        );
        self.request(
            MsgType::Introduce,
            0,
            "",
            &[d.as_bytes(), m.as_bytes(), p.as_bytes()],
        )
        .map(drop)
    }

    /// `RELEASE`: xenstored drops its connection to the domain.
    pub fn release(&mut self, domid: DomId) -> Result<()> {
        self.request(MsgType::Release, 0, "", &[domid.to_string().as_bytes()])
            .map(drop)
    }

    /// `/local/domain/<domid>` as xenstored computes it.
    pub fn get_domain_path(&mut self, domid: DomId) -> Result<String> {
        let v = self.request(
            MsgType::GetDomainPath,
            0,
            "",
            &[domid.to_string().as_bytes()],
        )?;
        Ok(wire::parse_string(&v)?)
    }

    pub fn is_domain_introduced(&mut self, domid: DomId) -> Result<bool> {
        let v = self.request(
            MsgType::IsDomainIntroduced,
            0,
            "",
            &[domid.to_string().as_bytes()],
        )?;
        Ok(wire::parse_bool(&v)?)
    }

    /// Runs `f` in a transaction and commits it, repeating the whole transaction when the
    /// commit conflicts (EAGAIN), up to [`TRANSACTION_RETRIES`] times. An error from `f`
    /// aborts the transaction.
    pub fn transaction<R>(
        &mut self,
        mut f: impl FnMut(&mut Transaction<'_, T>) -> Result<R>,
    ) -> Result<R> {
        for _ in 0..TRANSACTION_RETRIES {
            let v = self.request(MsgType::TransactionStart, 0, "", &[b""])?;
            let tx = wire::parse_tx_id(&v)?;
            let mut t = Transaction { client: self, tx };
            let out = match f(&mut t) {
                Ok(out) => out,
                Err(e) => {
                    let _ = self.request(MsgType::TransactionEnd, tx, "", &[b"F"]);
                    return Err(e);
                }
            };
            match self.request(MsgType::TransactionEnd, tx, "", &[b"T"]) {
                Ok(_) => return Ok(out),
                Err(XenError::Xs { errno, .. }) if errno == "EAGAIN" => continue,
                Err(e) => return Err(e),
            }
        }
        Err(XenError::XsTransactionRetries(TRANSACTION_RETRIES))
    }
}

fn rm_result(r: Result<Vec<u8>>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(XenError::Xs { errno, .. }) if errno == "ENOENT" => Ok(()),
        Err(e) => Err(e),
    }
}

/// The payload of xenstored's reply to `op` on `path`: an error reply becomes the errno it
/// names, a reply of another type is refused.
pub(crate) fn reply_payload(op: MsgType, path: &str, reply: Message) -> Result<Vec<u8>> {
    if reply.ty == MsgType::Error {
        let errno = wire::parse_error(&reply.payload)?;
        return Err(XenError::Xs {
            op: op_name(op),
            path: path.to_string(),
            errno,
        });
    }
    if reply.ty != op {
        return Err(WireError::UnexpectedType {
            want: op,
            got: reply.ty,
        }
        .into());
    }
    Ok(reply.payload)
}

pub(crate) fn op_name(op: MsgType) -> &'static str {
    match op {
        MsgType::Read => "read",
        MsgType::Write => "write",
        MsgType::Mkdir => "mkdir",
        MsgType::Rm => "rm",
        MsgType::Directory => "directory",
        MsgType::GetPerms => "get_perms",
        MsgType::SetPerms => "set_perms",
        MsgType::Watch => "watch",
        MsgType::Unwatch => "unwatch",
        MsgType::TransactionStart => "transaction_start",
        MsgType::TransactionEnd => "transaction_end",
        MsgType::Introduce => "introduce",
        MsgType::Release => "release",
        MsgType::GetDomainPath => "get_domain_path",
        MsgType::IsDomainIntroduced => "is_domain_introduced",
        _ => "request",
    }
}

/// Operations inside one transaction (see [`XsClient::transaction`]).
#[derive(Debug)]
pub struct Transaction<'a, T: Read + Write> {
    client: &'a mut XsClient<T>,
    tx: u32,
}

impl<T: Read + Write> Transaction<'_, T> {
    pub fn read(&mut self, path: &str) -> Result<Option<Vec<u8>>> {
        self.client.read_in(self.tx, path)
    }

    pub fn read_string(&mut self, path: &str) -> Result<Option<String>> {
        self.read(path)?
            .map(|v| wire::parse_string(&v).map_err(Into::into))
            .transpose()
    }

    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<()> {
        self.client
            .request(MsgType::Write, self.tx, path, &[value])
            .map(drop)
    }

    pub fn mkdir(&mut self, path: &str) -> Result<()> {
        self.client
            .request(MsgType::Mkdir, self.tx, path, &[])
            .map(drop)
    }

    pub fn rm(&mut self, path: &str) -> Result<()> {
        rm_result(self.client.request(MsgType::Rm, self.tx, path, &[]))
    }

    pub fn directory(&mut self, path: &str) -> Result<Option<Vec<String>>> {
        match self.client.request(MsgType::Directory, self.tx, path, &[]) {
            Ok(v) => Ok(Some(wire::parse_list(&v)?)),
            Err(XenError::Xs { errno, .. }) if errno == "ENOENT" => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn set_perms(&mut self, path: &str, perms: &[Perm]) -> Result<()> {
        let enc: Vec<String> = perms.iter().map(Perm::encode).collect();
        let parts: Vec<&[u8]> = enc.iter().map(|s| s.as_bytes()).collect();
        self.client
            .request(MsgType::SetPerms, self.tx, path, &parts)
            .map(drop)
    }

    pub fn get_perms(&mut self, path: &str) -> Result<Vec<Perm>> {
        let v = self.client.request(MsgType::GetPerms, self.tx, path, &[])?;
        Ok(wire::parse_perms(&v)?)
    }
}
