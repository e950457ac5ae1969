//! tokio xenstore client. One reader task owns the receive side: replies go to the waiting
//! request by request id, watch events to the watch with that token. Any framing violation
//! (oversize length, unknown type, a reply nobody asked for) closes the connection and fails
//! every pending request with that error: after one the stream's framing cannot be trusted.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::wire::{self, Decoder, Message, MsgType, Perm, WireError};
use super::{
    WatchEvent, request_payload,
    sync::{op_name, reply_payload},
};
use crate::{DomId, Result, XenError};

/// How long a request waits for its reply before failing with [`XenError::XsTimeout`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Events buffered per watch before new ones are dropped (consumers re-read state on each
/// event, so a dropped event among this many queued ones loses nothing).
pub const WATCH_QUEUE: usize = 1024;

type Reply = std::result::Result<Message, WireError>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

#[derive(Default)]
struct Shared {
    pending: HashMap<u32, oneshot::Sender<Reply>>,
    watches: HashMap<String, mpsc::Sender<WatchEvent>>,
    /// Requests that timed out: a late reply to one is discarded, not a protocol violation.
    abandoned: std::collections::HashSet<u32>,
    /// Set once the connection is unusable; later requests fail with it.
    dead: Option<WireError>,
    closed: bool,
}

struct Inner {
    writer: tokio::sync::Mutex<Writer>,
    shared: Mutex<Shared>,
    next_req: AtomicU32,
    next_token: AtomicU32,
    reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut r) = self.reader.lock()
            && let Some(h) = r.take()
        {
            h.abort();
        }
    }
}

/// A tokio xenstore connection; cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct AsyncXs {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AsyncXs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncXs").finish_non_exhaustive()
    }
}

impl AsyncXs {
    /// Connects to xenstored's socket (`XENSTORED_PATH` or `/run/xenstored/socket`).
    pub async fn connect() -> Result<Self> {
        let path = super::Transport::socket_path();
        let s = tokio::net::UnixStream::connect(&path)
            .await
            .map_err(|source| XenError::Open {
                path: path.into(),
                source,
            })?;
        Ok(Self::from_stream(s))
    }

    /// Runs the client over any connected stream (used by tests with a socketpair).
    pub fn from_stream<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S) -> Self {
        let (r, w) = tokio::io::split(stream);
        let inner = Arc::new(Inner {
            writer: tokio::sync::Mutex::new(Box::new(w)),
            shared: Mutex::new(Shared::default()),
            next_req: AtomicU32::new(1),
            next_token: AtomicU32::new(1),
            reader: Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        let handle = tokio::spawn(read_loop(r, weak));
        if let Ok(mut slot) = inner.reader.lock() {
            *slot = Some(handle);
        }
        Self { inner }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.inner.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn request(&self, op: MsgType, tx: u32, path: &str, parts: &[&[u8]]) -> Result<Vec<u8>> {
        let payload = request_payload(op, path, parts)?;
        let req_id = loop {
            let id = self.inner.next_req.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                break id;
            }
        };
        let (tx_reply, rx_reply) = oneshot::channel();
        {
            let mut sh = self.shared();
            if let Some(e) = &sh.dead {
                return Err(e.clone().into());
            }
            if sh.closed {
                return Err(XenError::XsClosed);
            }
            sh.pending.insert(req_id, tx_reply);
        }
        let frame = wire::encode(op, req_id, tx, &payload);
        let write = async {
            let mut w = self.inner.writer.lock().await;
            w.write_all(&frame).await?;
            w.flush().await
        };
        if let Err(e) = write.await {
            self.shared().pending.remove(&req_id);
            return Err(XenError::XsIo(e));
        }
        let reply = match tokio::time::timeout(REQUEST_TIMEOUT, rx_reply).await {
            Err(_) => {
                let mut sh = self.shared();
                if sh.pending.remove(&req_id).is_some() && sh.abandoned.len() < 1024 {
                    sh.abandoned.insert(req_id);
                }
                drop(sh);
                return Err(XenError::XsTimeout {
                    op: op_name(op),
                    path: path.to_string(),
                });
            }
            Ok(Err(_)) => return Err(XenError::XsClosed),
            Ok(Ok(r)) => r?,
        };
        reply_payload(op, path, reply)
    }

    async fn read_in(&self, tx: u32, path: &str) -> Result<Option<Vec<u8>>> {
        not_found_is_none(self.request(MsgType::Read, tx, path, &[]).await)
    }

    pub async fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        self.read_in(0, path).await
    }

    pub async fn read_string(&self, path: &str) -> Result<Option<String>> {
        self.read(path)
            .await?
            .map(|v| wire::parse_string(&v).map_err(Into::into))
            .transpose()
    }

    pub async fn write(&self, path: &str, value: &[u8]) -> Result<()> {
        self.request(MsgType::Write, 0, path, &[value])
            .await
            .map(drop)
    }

    pub async fn mkdir(&self, path: &str) -> Result<()> {
        self.request(MsgType::Mkdir, 0, path, &[]).await.map(drop)
    }

    pub async fn rm(&self, path: &str) -> Result<()> {
        not_found_is_none(self.request(MsgType::Rm, 0, path, &[]).await).map(drop)
    }

    pub async fn directory(&self, path: &str) -> Result<Option<Vec<String>>> {
        not_found_is_none(self.request(MsgType::Directory, 0, path, &[]).await)?
            .map(|v| wire::parse_list(&v).map_err(Into::into))
            .transpose()
    }

    pub async fn get_perms(&self, path: &str) -> Result<Vec<Perm>> {
        let v = self.request(MsgType::GetPerms, 0, path, &[]).await?;
        Ok(wire::parse_perms(&v)?)
    }

    pub async fn set_perms(&self, path: &str, perms: &[Perm]) -> Result<()> {
        set_perms(self, 0, path, perms).await
    }

    pub async fn introduce(&self, domid: DomId, store_mfn: u64, store_port: u32) -> Result<()> {
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
        .await
        .map(drop)
    }

    pub async fn release(&self, domid: DomId) -> Result<()> {
        self.request(MsgType::Release, 0, "", &[domid.to_string().as_bytes()])
            .await
            .map(drop)
    }

    pub async fn get_domain_path(&self, domid: DomId) -> Result<String> {
        let v = self
            .request(
                MsgType::GetDomainPath,
                0,
                "",
                &[domid.to_string().as_bytes()],
            )
            .await?;
        Ok(wire::parse_string(&v)?)
    }

    pub async fn is_domain_introduced(&self, domid: DomId) -> Result<bool> {
        let v = self
            .request(
                MsgType::IsDomainIntroduced,
                0,
                "",
                &[domid.to_string().as_bytes()],
            )
            .await?;
        Ok(wire::parse_bool(&v)?)
    }

    /// Watches `path` (or `@releaseDomain` / `@introduceDomain`). The returned [`Watch`]
    /// yields events (the first fires at once) and unwatches when dropped.
    pub async fn watch(&self, path: &str) -> Result<Watch> {
        let token = format!(
            "spore-{}",
            self.inner.next_token.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        self.shared().watches.insert(token.clone(), tx);
        if let Err(e) = self
            .request(MsgType::Watch, 0, path, &[token.as_bytes()])
            .await
        {
            self.shared().watches.remove(&token);
            return Err(e);
        }
        Ok(Watch {
            xs: self.clone(),
            path: path.to_string(),
            token,
            rx,
        })
    }

    /// Starts a transaction; finish it with [`AsyncTransaction::commit`] or `abort`.
    pub async fn transaction_start(&self) -> Result<AsyncTransaction> {
        let v = self
            .request(MsgType::TransactionStart, 0, "", &[b""])
            .await?;
        Ok(AsyncTransaction {
            xs: self.clone(),
            tx: wire::parse_tx_id(&v)?,
        })
    }

    /// Runs `f` in a transaction, repeating it while the commit conflicts (EAGAIN), up to
    /// [`super::sync::TRANSACTION_RETRIES`] times.
    pub async fn transaction<R, F>(&self, mut f: F) -> Result<R>
    where
        F: FnMut(AsyncTransaction) -> Pin<Box<dyn Future<Output = Result<R>> + Send>>,
    {
        for _ in 0..super::sync::TRANSACTION_RETRIES {
            let t = self.transaction_start().await?;
            let id = t.tx;
            match f(t).await {
                Ok(out) => {
                    if (AsyncTransaction {
                        xs: self.clone(),
                        tx: id,
                    })
                    .commit()
                    .await?
                    {
                        return Ok(out);
                    }
                }
                Err(e) => {
                    let _ = (AsyncTransaction {
                        xs: self.clone(),
                        tx: id,
                    })
                    .abort()
                    .await;
                    return Err(e);
                }
            }
        }
        Err(XenError::XsTransactionRetries(
            super::sync::TRANSACTION_RETRIES,
        ))
    }
}

fn not_found_is_none(r: Result<Vec<u8>>) -> Result<Option<Vec<u8>>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(XenError::Xs { errno, .. }) if errno == "ENOENT" => Ok(None),
        Err(e) => Err(e),
    }
}

async fn set_perms(xs: &AsyncXs, tx: u32, path: &str, perms: &[Perm]) -> Result<()> {
    let enc: Vec<String> = perms.iter().map(Perm::encode).collect();
    let parts: Vec<&[u8]> = enc.iter().map(|s| s.as_bytes()).collect();
    xs.request(MsgType::SetPerms, tx, path, &parts)
        .await
        .map(drop)
}

/// A transaction on an [`AsyncXs`]; every operation carries its id.
#[derive(Debug)]
pub struct AsyncTransaction {
    xs: AsyncXs,
    tx: u32,
}

impl AsyncTransaction {
    pub async fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        self.xs.read_in(self.tx, path).await
    }
    pub async fn read_string(&self, path: &str) -> Result<Option<String>> {
        self.read(path)
            .await?
            .map(|v| wire::parse_string(&v).map_err(Into::into))
            .transpose()
    }
    pub async fn write(&self, path: &str, value: &[u8]) -> Result<()> {
        self.xs
            .request(MsgType::Write, self.tx, path, &[value])
            .await
            .map(drop)
    }
    pub async fn mkdir(&self, path: &str) -> Result<()> {
        self.xs
            .request(MsgType::Mkdir, self.tx, path, &[])
            .await
            .map(drop)
    }
    pub async fn rm(&self, path: &str) -> Result<()> {
        not_found_is_none(self.xs.request(MsgType::Rm, self.tx, path, &[]).await).map(drop)
    }
    pub async fn directory(&self, path: &str) -> Result<Option<Vec<String>>> {
        not_found_is_none(
            self.xs
                .request(MsgType::Directory, self.tx, path, &[])
                .await,
        )?
        .map(|v| wire::parse_list(&v).map_err(Into::into))
        .transpose()
    }
    pub async fn set_perms(&self, path: &str, perms: &[Perm]) -> Result<()> {
        set_perms(&self.xs, self.tx, path, perms).await
    }
    /// Commits; `Ok(false)` if another writer conflicted (EAGAIN) and nothing was applied.
    pub async fn commit(self) -> Result<bool> {
        match self
            .xs
            .request(MsgType::TransactionEnd, self.tx, "", &[b"T"])
            .await
        {
            Ok(_) => Ok(true),
            Err(XenError::Xs { errno, .. }) if errno == "EAGAIN" => Ok(false),
            Err(e) => Err(e),
        }
    }
    pub async fn abort(self) -> Result<()> {
        self.xs
            .request(MsgType::TransactionEnd, self.tx, "", &[b"F"])
            .await
            .map(drop)
    }
}

/// An active watch: a stream of events, unwatched on drop.
#[derive(Debug)]
pub struct Watch {
    xs: AsyncXs,
    path: String,
    token: String,
    rx: mpsc::Receiver<WatchEvent>,
}

impl Watch {
    /// The next event; `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.rx.recv().await
    }

    pub fn token(&self) -> &str {
        &self.token
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.xs.shared().watches.remove(&self.token);
        let (xs, path, token) = (self.xs.clone(), self.path.clone(), self.token.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = xs
                    .request(MsgType::Unwatch, 0, &path, &[token.as_bytes()])
                    .await;
            });
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(mut r: R, inner: std::sync::Weak<Inner>) {
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 8192];
    let fatal = loop {
        let n = match r.read(&mut buf).await {
            Ok(0) => {
                break if decoder.has_partial() {
                    Some(WireError::Truncated)
                } else {
                    None
                };
            }
            Ok(n) => n,
            Err(_) => break None,
        };
        decoder.push(&buf[..n]);
        let Some(inner) = inner.upgrade() else { return };
        let mut err = None;
        loop {
            match decoder.next_message() {
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
                Ok(Some(m)) => {
                    if let Err(e) = dispatch(&inner, m) {
                        err = Some(e);
                        break;
                    }
                }
            }
        }
        if err.is_some() {
            break err;
        }
    };
    if let Some(inner) = inner.upgrade() {
        let mut sh = inner.shared.lock().unwrap_or_else(|p| p.into_inner());
        sh.closed = true;
        if let Some(e) = &fatal {
            tracing::warn!(error = %e, "xenstore connection closed after a protocol violation");
            sh.dead = Some(e.clone());
        }
        for (_, tx) in sh.pending.drain() {
            let _ = tx.send(Err(fatal.clone().unwrap_or(WireError::Truncated)));
        }
        sh.watches.clear();
    }
}

fn dispatch(inner: &Inner, m: Message) -> std::result::Result<(), WireError> {
    let mut sh = inner.shared.lock().unwrap_or_else(|p| p.into_inner());
    if m.ty == MsgType::WatchEvent {
        let (path, token) = wire::parse_watch_event(&m.payload)?;
        if let Some(tx) = sh.watches.get(&token)
            && tx.try_send(WatchEvent { path, token }).is_err()
        {
            tracing::debug!("xenstore watch queue full; event dropped");
        }
        return Ok(());
    }
    match sh.pending.remove(&m.req_id) {
        Some(tx) => {
            let _ = tx.send(Ok(m));
            Ok(())
        }
        None if sh.abandoned.remove(&m.req_id) => Ok(()),
        None => Err(WireError::UnexpectedReqId {
            want: 0,
            got: m.req_id,
        }),
    }
}
