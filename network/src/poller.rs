//! A zone loop's readiness source: its own epoll instance (edge-triggered registrations, each
//! with a [`Token`]), itself waited on through tokio. One zone's descriptors never wake another
//! zone's loop, and the loop learns exactly which flows became ready.

use std::os::fd::{AsFd, OwnedFd};

use rustix::event::epoll::{self, EventData, EventFlags};
use tokio::io::unix::AsyncFd;

/// What a readiness event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Token {
    Link,
    /// A flow's host socket: slot and generation (a reused slot never gets a stale event).
    Flow(u32, u32),
    /// A published port's listening socket (index into the zone's listeners).
    Listener(u32),
}

impl Token {
    fn encode(self) -> u64 {
        match self {
            Token::Link => 0,
            Token::Flow(slot, generation) => {
                (1 << 62) | (u64::from(generation & 0x3fff_ffff) << 32) | u64::from(slot)
            }
            Token::Listener(i) => (2 << 62) | u64::from(i),
        }
    }

    fn decode(v: u64) -> Token {
        match v >> 62 {
            1 => Token::Flow(v as u32, ((v >> 32) & 0x3fff_ffff) as u32),
            2 => Token::Listener(v as u32),
            _ => Token::Link,
        }
    }
}

/// Readiness reported for one token.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub token: Token,
    pub readable: bool,
    pub writable: bool,
    /// Error or hang-up: reading or `SO_ERROR` tells which.
    pub error: bool,
}

pub struct Poller {
    epoll: AsyncFd<OwnedFd>,
}

/// Events collected per `epoll_wait`; more stay queued for the next call.
const EVENTS: usize = 128;

impl Poller {
    pub fn new() -> std::io::Result<Poller> {
        let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        Ok(Poller {
            epoll: crate::sys::watch_readable(fd)?,
        })
    }

    /// Registers `fd` for input and output readiness, edge-triggered.
    pub fn add(&self, fd: impl AsFd, token: Token) -> std::io::Result<()> {
        let flags = EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET;
        epoll::add(
            self.epoll.get_ref(),
            fd,
            EventData::new_u64(token.encode()),
            flags,
        )?;
        Ok(())
    }

    /// Registers a listening socket (input only).
    pub fn add_listener(&self, fd: impl AsFd, token: Token) -> std::io::Result<()> {
        epoll::add(
            self.epoll.get_ref(),
            fd,
            EventData::new_u64(token.encode()),
            EventFlags::IN | EventFlags::ET,
        )?;
        Ok(())
    }

    /// Unregisters `fd` (closing it does too; this is for descriptors that stay open).
    pub fn remove(&self, fd: impl AsFd) {
        let _ = epoll::delete(self.epoll.get_ref(), fd);
    }

    /// Collects what is ready now, without waiting.
    pub fn poll(&self, out: &mut Vec<Ready>) -> std::io::Result<()> {
        let mut events = [std::mem::MaybeUninit::<epoll::Event>::uninit(); EVENTS];
        let (events, _) = epoll::wait(
            self.epoll.get_ref(),
            &mut events[..],
            Some(&rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            }),
        )?;
        out.extend(events.iter().map(|e| {
            let flags = e.flags;
            Ready {
                token: Token::decode(e.data.u64()),
                readable: flags.intersects(EventFlags::IN | EventFlags::RDHUP | EventFlags::HUP),
                writable: flags.contains(EventFlags::OUT),
                error: flags.intersects(EventFlags::ERR | EventFlags::HUP),
            }
        }));
        Ok(())
    }

    /// Waits until something may be ready, then lets `drain` collect it.
    pub async fn wait(&self) -> std::io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, OwnedFd>> {
        self.epoll.readable().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for t in [
            Token::Link,
            Token::Flow(0, 0),
            Token::Flow(u32::MAX, 0x3fff_ffff),
            Token::Flow(7, 9),
            Token::Listener(3),
        ] {
            assert_eq!(Token::decode(t.encode()), t);
        }
    }
}
