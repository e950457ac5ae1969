//! The host end of a zone's IDM channel, as spored uses it: Started, Exit (acknowledged),
//! Ping/Pong.

use anyhow::{Context, Result, bail, ensure};
use futures::{SinkExt, StreamExt};
use spore_idm::proto::{self, idm_packet::Body};
use spore_idm::{ExitStatus, IdmCodec, IdmPacket};
use spore_runtime::ByteStream;
use tokio_util::codec::Framed;

use crate::lab::BOOT;

pub type Idm = Framed<Box<dyn ByteStream>, IdmCodec>;

pub fn framed(stream: Box<dyn ByteStream>) -> Idm {
    Framed::new(stream, IdmCodec::new())
}

pub async fn next_body(idm: &mut Idm, what: &str) -> Result<Body> {
    loop {
        let packet = tokio::time::timeout(BOOT, idm.next())
            .await
            .with_context(|| format!("no IDM packet ({what}) within {BOOT:?}"))?
            .with_context(|| format!("IDM closed while waiting for {what}"))?
            .context("IDM stream")?
            .context("IDM packet")?;
        if let Some(body) = packet.body {
            return Ok(body);
        }
    }
}

pub async fn expect_started(idm: &mut Idm) -> Result<()> {
    match next_body(idm, "Started").await? {
        Body::Started(s) => {
            ensure!(s.workload_pid > 1, "{s:?}");
            Ok(())
        }
        other => bail!("expected Started, got {other:?}"),
    }
}

/// The workload's Exit with `code`, acknowledged as spored does: spore-init powers off only
/// after the ack.
pub async fn expect_exit(idm: &mut Idm, code: i32) -> Result<()> {
    match next_body(idm, "Exit").await? {
        Body::Exit(e) => {
            ensure!(
                e.status() == Some(ExitStatus::Code(code)),
                "exit {:?}, want {code}",
                e.status()
            );
            idm.send(IdmPacket::event(Body::ExitAck(proto::ExitAck {})))
                .await
                .context("sending ExitAck")?;
            Ok(())
        }
        other => bail!("expected Exit, got {other:?}"),
    }
}

/// A Ping with `nonce` answered by the guest's Pong.
pub async fn ping(idm: &mut Idm, id: u64, nonce: u64) -> Result<()> {
    idm.send(IdmPacket::request(id, Body::Ping(proto::Ping { nonce })))
        .await?;
    match next_body(idm, "Pong").await? {
        Body::Pong(p) => ensure!(p.nonce == nonce, "{p:?}"),
        other => bail!("expected Pong, got {other:?}"),
    }
    Ok(())
}

/// Reads a zone's IDM in the background and acknowledges every Exit, as spored does, so the
/// guest powers off once its workload ended.
pub fn ack_exits(stream: Box<dyn ByteStream>) -> tokio::task::JoinHandle<()> {
    let mut idm = framed(stream);
    tokio::spawn(async move {
        while let Some(item) = idm.next().await {
            let Ok(item) = item else { break };
            if let Ok(IdmPacket {
                body: Some(Body::Exit(_)),
                ..
            }) = item
            {
                let ack = IdmPacket::event(Body::ExitAck(proto::ExitAck {}));
                if idm.send(ack).await.is_err() {
                    break;
                }
            }
        }
    })
}
