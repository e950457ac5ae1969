//! The crate's error type. Messages name the thing that failed and, where there is one, the
//! fix; they do not repeat their `#[source]`.

use std::path::PathBuf;

use crate::DomId;

/// Everything that can go wrong in spore's Xen userspace.
#[derive(Debug, thiserror::Error)]
pub enum XenError {
    #[error(
        "cannot open {path} (is this a Xen dom0 with the xen-privcmd, xen-evtchn and xen-gntdev modules loaded and xenfs mounted?)"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "Xen {major}.{minor} is not supported: spore knows the toolstack interface of Xen {}",
        crate::version::XenVersion::supported()
    )]
    UnsupportedXen { major: u16, minor: u16 },
    #[error("hypercall {what} failed")]
    Hypercall {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} ioctl failed")]
    Ioctl {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("mmap of {len} bytes failed")]
    Mmap {
        len: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("mapping frames of domain {domid} failed{}", frame.map(|f| format!(" at frame {f:#x}")).unwrap_or_default())]
    MapForeign {
        domid: DomId,
        frame: Option<u64>,
        #[source]
        source: std::io::Error,
    },
    #[error("mapping resource type {ty} id {id} of domain {domid} failed")]
    MapResource {
        domid: DomId,
        ty: u32,
        id: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("mapping grant {gref} of domain {domid} failed")]
    MapGrant {
        domid: DomId,
        gref: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("domain {0} does not exist")]
    NoSuchDomain(DomId),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    // ------------------------------------------------------------ xenstore
    #[error("xenstore connection failed")]
    XsIo(#[source] std::io::Error),
    #[error("xenstore {op} {path:?} failed: {errno}")]
    Xs {
        op: &'static str,
        path: String,
        errno: String,
    },
    #[error("xenstore sent a malformed reply")]
    XsProtocol(#[from] crate::xs::wire::WireError),
    #[error("xenstore request {op} {path:?} is too long ({len} bytes; the limit is 4096)")]
    XsRequestTooLong {
        op: &'static str,
        path: String,
        len: usize,
    },
    #[error(
        "xenstore path {0:?} is not valid (absolute, no empty segments, ASCII letters, digits and -/_@, at most 3072 bytes)"
    )]
    XsBadPath(String),
    #[error("xenstore transaction kept conflicting after {0} attempts")]
    XsTransactionRetries(u32),
    #[error("xenstore connection closed")]
    XsClosed,
    #[error("xenstore {op} {path:?} timed out")]
    XsTimeout { op: &'static str, path: String },

    // ------------------------------------------------------------ kernel images
    #[error("kernel image")]
    Kernel(#[from] spore_kernel::KernelError),

    // ------------------------------------------------------------ domain build
    #[error("domain build: {0}")]
    Build(String),

    #[error(transparent)]
    RingCorrupt(crate::console::RingCorrupt),

    // ------------------------------------------------------------ devices
    #[error("{what} failed")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("backend {path} did not reach state {want} within {secs} s (last state {last})")]
    BackendTimeout {
        path: String,
        want: u32,
        last: String,
        secs: u64,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, XenError>;
