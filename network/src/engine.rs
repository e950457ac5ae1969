//! A zone's loop: one tokio task owning the zone's link, poller and stack. Batch in (up to
//! [`BATCH`] frames), run the touched flows, one write out; sleep on the poller or the next
//! timer, never busy. A failing link is reopened with backoff; nothing here ends another
//! zone's loop.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::config::Config;
use crate::counters::Counters;
use crate::link::{Link, LinkError, LinkSpec};
use crate::poller::{Poller, Ready, Token};
use crate::ports;
use crate::stack::{PortReport, Stack};
use crate::zone::ZoneNet;

/// Frames read per pass before the touched flows run.
const BATCH: usize = 64;
/// Passes before the loop yields to other zones' tasks.
const PASSES: usize = 32;
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What a zone loop shares with the service (status, counters).
#[derive(Debug)]
pub struct ZoneShared {
    pub zone: ZoneNet,
    pub link: LinkSpec,
    pub counters: Arc<Counters>,
    pub ports: Mutex<Vec<PortReport>>,
}

/// Why a zone's loop ended on its own.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot create the zone's poller")]
    Poller(#[source] std::io::Error),
}

pub async fn run(
    shared: Arc<ZoneShared>,
    cfg: Arc<Config>,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), EngineError> {
    let poller = Poller::new().map_err(EngineError::Poller)?;
    let mut stack = Stack::new(shared.zone.clone(), cfg, shared.counters.clone());
    open_ports(&mut stack, &poller, &shared);

    let mut link: Option<Box<dyn Link>> = None;
    let (mut link_readable, mut link_writable) = (false, false);
    let mut retry_at = Instant::now();
    let mut backoff = RETRY_MIN;
    let mut logged_failure = false;
    let mut ready: Vec<Ready> = Vec::with_capacity(256);
    let name = shared.zone.name.clone();

    loop {
        if link.is_none() && Instant::now() >= retry_at {
            match shared.link.open() {
                Ok(l) => match poller.add(l.fd(), Token::Link) {
                    Ok(()) => {
                        tracing::info!(zone = %name, "link {} up", shared.link);
                        link = Some(l);
                        (link_readable, link_writable) = (true, true);
                        backoff = RETRY_MIN;
                        logged_failure = false;
                        Counters::set(&shared.counters.link_up, 1);
                    }
                    Err(e) => {
                        tracing::warn!(zone = %name, "cannot watch link {}: {e}", shared.link);
                        retry_at = Instant::now() + RETRY_MAX;
                    }
                },
                Err(e) => {
                    if !logged_failure {
                        tracing::info!(zone = %name, "link {} not open yet ({e}); retrying", shared.link);
                        logged_failure = true;
                    }
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }

        let mut more = false;
        for _ in 0..PASSES {
            ready.clear();
            if let Err(e) = poller.poll(&mut ready) {
                tracing::warn!(zone = %name, "poller: {e}");
            }
            for r in &ready {
                match r.token {
                    Token::Link => {
                        link_readable |= r.readable || r.error;
                        link_writable |= r.writable || r.error;
                    }
                    Token::Flow(slot, generation) => {
                        stack.host_ready(slot, generation, r.readable, r.writable, r.error)
                    }
                    Token::Listener(i) => stack.listener_ready(i as usize, &poller),
                }
            }
            let mut lost: Option<LinkError> = None;
            if let Some(l) = link.as_mut()
                && link_readable
                && stack.room()
            {
                match l.recv(BATCH, &mut |frame| stack.ingress(frame, &poller)) {
                    Ok(n) if n < BATCH => link_readable = false,
                    Ok(_) => {}
                    Err(e) => lost = Some(e),
                }
            }
            stack.service();
            if lost.is_none()
                && let Some(l) = link.as_mut()
                && link_writable
                && !stack.tx.is_empty()
            {
                let before = stack.tx.pending();
                match l.send(&mut stack.tx) {
                    Ok(all) => link_writable = all,
                    Err(e) => lost = Some(e),
                }
                Counters::add(
                    &shared.counters.tx_bytes,
                    (before - stack.tx.pending()) as u64,
                );
            }
            if let Some(e) = lost {
                tracing::info!(zone = %name, "link {} down: {e}", shared.link);
                link = None;
                stack.link_lost();
                Counters::set(&shared.counters.link_up, 0);
                Counters::add(&shared.counters.link_reconnects, 1);
                retry_at = Instant::now() + RETRY_MIN;
            }
            more = (link.is_some() && link_readable && stack.room()) || stack.has_work();
            if ready.is_empty() && !more {
                break;
            }
        }
        if more {
            tokio::task::yield_now().await;
            continue;
        }

        let mut deadline = stack.next_timer();
        if link.is_none() {
            deadline = Some(deadline.map_or(retry_at, |d| d.min(retry_at)));
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => break,
            guard = poller.wait() => match guard {
                Ok(mut g) => g.clear_ready(),
                Err(e) => tracing::warn!(zone = %name, "poller wait: {e}"),
            },
            _ = sleep => {}
        }
    }
    tracing::info!(zone = %name, "detached");
    Ok(())
}

fn open_ports(stack: &mut Stack, poller: &Poller, shared: &ZoneShared) {
    let mut reports = Vec::new();
    for port in &shared.zone.ports {
        let report = match ports::bind(port) {
            Ok(l) => {
                let index = stack.listeners.len();
                match poller.add_listener(&l.fd, Token::Listener(index as u32)) {
                    Ok(()) => {
                        tracing::info!(zone = %shared.zone.name, "publishing {port}");
                        stack.listeners.push(l);
                        PortReport {
                            port: port.to_string(),
                            listening: true,
                            error: None,
                        }
                    }
                    Err(e) => PortReport {
                        port: port.to_string(),
                        listening: false,
                        error: Some(e.to_string()),
                    },
                }
            }
            Err(e) => {
                tracing::warn!(zone = %shared.zone.name, "cannot publish {port}: {e}");
                PortReport {
                    port: port.to_string(),
                    listening: false,
                    error: Some(format!("cannot bind: {e}")),
                }
            }
        };
        reports.push(report);
    }
    if let Ok(mut p) = shared.ports.lock() {
        *p = reports;
    }
}
