//! The link against a scripted guest on an in-memory stream: event decoding, requests, and exec
//! flow control with guests that honour their window and guests that do not.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use spore_idm::proto::{self, exec_output::Stream, idm_packet::Body};
use spore_idm::{IdmCodec, IdmPacket};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use uuid::Uuid;

use super::exec::{ExecEvent, OUTPUT_WINDOW};
use super::*;

type Guest = Framed<DuplexStream, IdmCodec>;

fn link() -> (IdmLink, Guest, mpsc::Receiver<GuestEvent>) {
    let (guest, host) = tokio::io::duplex(1 << 16);
    let (tx, rx) = mpsc::channel(8);
    let link = IdmLink::spawn(Uuid::nil(), Box::new(host), tx);
    (link, Framed::new(guest, IdmCodec::new()), rx)
}

/// The next packet the guest receives (bounded wait).
async fn receive(guest: &mut Guest) -> IdmPacket {
    tokio::time::timeout(Duration::from_secs(10), guest.next())
        .await
        .expect("a packet within 10 s")
        .expect("the stream is open")
        .unwrap()
        .unwrap()
}

fn output(stream_id: u64, stream: Stream, data: Vec<u8>) -> IdmPacket {
    IdmPacket::stream(
        stream_id,
        Body::ExecOutput(proto::ExecOutput {
            stream: stream.into(),
            data,
        }),
    )
}

fn started(stream_id: u64, stdin_window: u32) -> IdmPacket {
    IdmPacket::stream(
        stream_id,
        Body::ExecStarted(proto::ExecStarted {
            pid: 42,
            stdin_window,
            output_flow_control: true,
        }),
    )
}

/// Starts an exec and plays the guest's ExecStarted; returns the session and its stream id.
async fn start(link: &IdmLink, guest: &mut Guest, stdin_window: u32) -> (exec::ExecSession, u64) {
    let session = link
        .exec(
            proto::ExecStart {
                argv: vec!["cat".into()],
                ..Default::default()
            },
            4,
        )
        .await
        .unwrap();
    let packet = receive(guest).await;
    let Some(Body::ExecStart(start)) = packet.body else {
        panic!("{packet:?}")
    };
    assert_eq!(start.output_window, OUTPUT_WINDOW);
    assert_ne!(packet.stream_id, 0);
    guest
        .send(started(packet.stream_id, stdin_window))
        .await
        .unwrap();
    (session, packet.stream_id)
}

#[tokio::test]
async fn decodes_guest_events_and_skips_garbage() {
    let (_link, mut guest, mut rx) = link();
    use tokio::io::AsyncWriteExt;
    guest
        .get_mut()
        .write_all(b"\x05\x00\x00\x00garbage")
        .await
        .unwrap();
    guest
        .send(IdmPacket::event(Body::Started(proto::Started {
            workload_pid: 2,
            ..Default::default()
        })))
        .await
        .unwrap();
    guest
        .send(IdmPacket::event(Body::Exit(proto::Exit {
            status: Some(proto::exit::Status::Signal(9)),
            core_dumped: false,
        })))
        .await
        .unwrap();
    drop(guest);
    assert!(matches!(rx.recv().await, Some(GuestEvent::Started(s)) if s.workload_pid == 2));
    assert_eq!(
        rx.recv().await,
        Some(GuestEvent::Exit(spore_idm::ExitStatus::Signal {
            signal: 9,
            core_dumped: false
        }))
    );
    assert_eq!(rx.recv().await, Some(GuestEvent::Closed));
}

#[test]
fn bounded_cuts_long_guest_text_on_a_char_boundary() {
    let long = "é".repeat(1000);
    let cut = bounded(&long);
    assert!(cut.len() <= 1027);
    assert!(cut.ends_with("..."));
}

#[tokio::test]
async fn metrics_are_matched_by_request_id_and_time_out() {
    let (link, mut guest, _rx) = link();
    let asking = tokio::spawn({
        let link = link.clone();
        async move { link.metrics(true).await }
    });
    let packet = receive(&mut guest).await;
    assert!(matches!(
        packet.body,
        Some(Body::MetricsRequest(proto::MetricsRequest {
            processes: true
        }))
    ));
    // An answer to another request first: ignored.
    guest
        .send(IdmPacket::request(
            packet.request_id + 100,
            Body::MetricsResponse(proto::MetricsResponse {
                memory_total_bytes: 1,
                ..Default::default()
            }),
        ))
        .await
        .unwrap();
    guest
        .send(IdmPacket::request(
            packet.request_id,
            Body::MetricsResponse(proto::MetricsResponse {
                memory_total_bytes: 7,
                process_count: 3,
                ..Default::default()
            }),
        ))
        .await
        .unwrap();
    let metrics = asking.await.unwrap().unwrap();
    assert_eq!((metrics.memory_total_bytes, metrics.process_count), (7, 3));

    // A guest that never answers: the caller gets a timeout, and the entry is gone.
    let err = link
        .request(
            Body::MetricsRequest(proto::MetricsRequest { processes: false }),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert_eq!(err, LinkError::Timeout(Duration::from_millis(200)));
    assert!(lock(&link.shared.pending).is_empty());
    // A closed channel fails waiting and later requests at once.
    drop(guest);
    tokio::time::timeout(Duration::from_secs(5), async {
        while !link.shared.closed.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(link.metrics(false).await.unwrap_err(), LinkError::Closed);
}

/// A guest that honours its window: it sends output only while it has credit, as fast as it
/// can. However slowly the consumer reads, the session never holds more than one window, the
/// credit it returns covers exactly what was consumed, and nothing is lost or reordered.
#[tokio::test]
async fn output_is_bounded_by_the_window_and_credit_follows_consumption() {
    let (link, mut guest, mut events) = link();
    let (mut session, id) = start(&link, &mut guest, 0).await;
    assert_eq!(
        session.next().await.unwrap(),
        Some(ExecEvent::Started { pid: 42 })
    );
    const TOTAL: usize = 4 * 1024 * 1024;
    let guest_task = tokio::spawn(async move {
        let mut credit = OUTPUT_WINDOW as usize;
        let mut sent = 0usize;
        let mut granted = 0usize;
        while sent < TOTAL {
            while credit == 0 {
                let packet = receive(&mut guest).await;
                match packet.body {
                    Some(Body::ExecCredit(c)) if packet.stream_id == id => {
                        credit += c.bytes as usize;
                        granted += c.bytes as usize;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            let n = credit.min(32 * 1024).min(TOTAL - sent);
            let data: Vec<u8> = (sent..sent + n).map(|i| (i % 251) as u8).collect();
            guest.send(output(id, Stream::Stdout, data)).await.unwrap();
            credit -= n;
            sent += n;
        }
        // Events keep flowing past a session that is not being read.
        guest
            .send(IdmPacket::event(Body::Started(proto::Started::default())))
            .await
            .unwrap();
        guest
            .send(IdmPacket::stream(
                id,
                Body::ExecExit(proto::ExecExit {
                    status: Some(proto::exec_exit::Status::Code(0)),
                }),
            ))
            .await
            .unwrap();
        (guest, granted)
    });
    let mut received = 0usize;
    let mut peak = 0usize;
    loop {
        peak = peak.max(session.buffered());
        match session.next().await.unwrap() {
            Some(ExecEvent::Stdout(data)) => {
                for (i, b) in data.iter().enumerate() {
                    assert_eq!(*b, ((received + i) % 251) as u8, "byte {}", received + i);
                }
                received += data.len();
                // A slow client.
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            Some(ExecEvent::Exited(status)) => {
                assert_eq!(status, spore_idm::ExitStatus::Code(0));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received, TOTAL);
    assert!(peak <= OUTPUT_WINDOW as usize, "buffered {peak} bytes");
    let (_guest, granted) = guest_task.await.unwrap();
    assert!(
        granted >= TOTAL - OUTPUT_WINDOW as usize && granted <= TOTAL,
        "granted {granted}"
    );
    assert!(matches!(events.recv().await, Some(GuestEvent::Started(_))));
}

/// A guest that ignores its window: what it sends past the window is not kept, the session is
/// cancelled in the guest and its consumer told why; the zone's events still get through.
#[tokio::test]
async fn a_guest_that_floods_past_its_window_is_cut_off() {
    let (link, mut guest, mut events) = link();
    let (mut session, id) = start(&link, &mut guest, 0).await;
    for _ in 0..(2 * OUTPUT_WINDOW as usize / 65536 + 2) {
        guest
            .send(output(id, Stream::Stderr, vec![b'x'; 65536]))
            .await
            .unwrap();
    }
    guest
        .send(IdmPacket::event(Body::Exit(proto::Exit {
            status: Some(proto::exit::Status::Code(0)),
            core_dumped: false,
        })))
        .await
        .unwrap();
    assert!(matches!(events.recv().await, Some(GuestEvent::Exit(_))));
    assert!(session.buffered() <= OUTPUT_WINDOW as usize);
    assert_eq!(
        session.next().await.unwrap(),
        Some(ExecEvent::Started { pid: 42 })
    );
    let err = session.next().await.unwrap_err();
    assert!(
        matches!(&err, LinkError::Violation(m) if m.contains("beyond its 262144-byte window")),
        "{err}"
    );
    assert_eq!(session.buffered(), 0);
    let cancel = receive(&mut guest).await;
    assert_eq!(cancel.stream_id, id);
    assert!(
        matches!(cancel.body, Some(Body::ExecCancel(_))),
        "{cancel:?}"
    );
}

/// Stdin waits for the guest's credit, and a session dropped before its exit is cancelled.
#[tokio::test]
async fn stdin_waits_for_credit_and_a_dropped_session_is_cancelled() {
    let (link, mut guest, _events) = link();
    let (session, id) = start(&link, &mut guest, 10).await;
    let input = session.input();
    let sending = tokio::spawn(async move { input.stdin(b"0123456789abcdef").await });
    let first = receive(&mut guest).await;
    assert!(
        matches!(&first.body, Some(Body::ExecStdin(s)) if s.data == b"0123456789"),
        "{first:?}"
    );
    // Nothing more until credit comes.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), guest.next())
            .await
            .is_err()
    );
    guest
        .send(IdmPacket::stream(
            id,
            Body::ExecCredit(proto::ExecCredit { bytes: 10 }),
        ))
        .await
        .unwrap();
    let second = receive(&mut guest).await;
    assert!(
        matches!(&second.body, Some(Body::ExecStdin(s)) if s.data == b"abcdef"),
        "{second:?}"
    );
    sending.await.unwrap().unwrap();
    drop(session);
    let cancel = receive(&mut guest).await;
    assert_eq!(cancel.stream_id, id);
    assert!(
        matches!(cancel.body, Some(Body::ExecCancel(_))),
        "{cancel:?}"
    );
}

#[tokio::test]
async fn sessions_are_limited_and_an_adopting_daemon_cancels_old_ones() {
    let (link, mut guest, _events) = link();
    let links = GuestLinks::default();
    let registration = links.register(&link, true);
    let cancel = receive(&mut guest).await;
    assert_eq!((cancel.stream_id, cancel.request_id), (0, 0));
    assert!(matches!(cancel.body, Some(Body::ExecCancel(_))));
    assert!(links.get(Uuid::nil()).is_some());
    let start = || proto::ExecStart {
        argv: vec!["true".into()],
        ..Default::default()
    };
    let one = link.exec(start(), 2).await.unwrap();
    let _two = link.exec(start(), 2).await.unwrap();
    assert_eq!(
        link.exec(start(), 2).await.err(),
        Some(LinkError::TooManyExecs(2))
    );
    drop(one);
    let _three = link.exec(start(), 2).await.unwrap();
    drop(registration);
    assert!(links.get(Uuid::nil()).is_none());
}
