//! Framing tests: round trips, hostile frames, both codecs.

use futures::{SinkExt, StreamExt};
use prost::Message;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::proto::{self, idm_packet::Body};
use crate::*;

fn ping(id: u64) -> IdmPacket {
    IdmPacket::request(
        id,
        Body::Ping(proto::Ping {
            nonce: id.wrapping_mul(10),
        }),
    )
}

fn output(stream_id: u64, len: usize) -> IdmPacket {
    IdmPacket::stream(
        stream_id,
        Body::ExecOutput(proto::ExecOutput {
            stream: proto::exec_output::Stream::Stderr.into(),
            data: (0..len).map(|i| (i % 251) as u8).collect(),
        }),
    )
}

fn all_packets(bytes: &[u8]) -> Vec<std::result::Result<IdmPacket, String>> {
    let mut reader = IdmReader::new(bytes);
    let mut out = Vec::new();
    loop {
        match reader.read_packet() {
            Ok(Some(p)) => out.push(Ok(p)),
            Ok(None) => return out,
            Err(e) => out.push(Err(e.to_string())),
        }
    }
}

#[test]
fn frame_layout() {
    let bytes = frame(&ping(1)).unwrap();
    let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    assert_eq!(len, bytes.len() - 4);
    assert_eq!(&bytes[4..9], b"\rIDM1");
    // The body is a plain protobuf message.
    let decoded = IdmPacket::decode(&bytes[4..]).unwrap();
    assert_eq!(decoded, ping(1));
}

#[test]
fn encoder_supplies_missing_magic() {
    let mut packet = ping(2);
    packet.magic = 0;
    let bytes = frame(&packet).unwrap();
    assert_eq!(&bytes[4..9], b"\rIDM1");
    assert_eq!(all_packets(&bytes), vec![Ok(ping(2))]);
}

#[test]
fn encoder_refuses_wrong_magic() {
    let mut packet = ping(2);
    packet.magic = 0xdead_beef;
    let mut out = vec![1, 2, 3];
    assert!(matches!(
        encode_frame(&packet, &mut out),
        Err(IdmError::BadMagic { found: 0xdead_beef })
    ));
    assert_eq!(out, [1, 2, 3]);
}

#[test]
fn round_trip_many_kinds() {
    let packets = vec![
        IdmPacket::event(Body::Started(proto::Started {
            init_start_ns: 1,
            modules_start_ns: 2,
            modules_loaded_ns: 3,
            rootfs_ready_ns: 4,
            workload_exec_ns: 5,
            workload_pid: 42,
            kernel_release: "6.1.0".into(),
        })),
        IdmPacket::event(Body::Exit(
            ExitStatus::Signal {
                signal: 9,
                core_dumped: false,
            }
            .into(),
        )),
        IdmPacket::event(Body::Exit(ExitStatus::Code(3).into())),
        IdmPacket::event(Body::ExitAck(proto::ExitAck {})),
        ping(u64::MAX),
        IdmPacket::request(
            5,
            Body::MetricsRequest(proto::MetricsRequest { processes: true }),
        ),
        output(9, 0),
        output(9, 70_000),
        IdmPacket::stream(9, Body::ExecStdinClosed(proto::ExecStdinClosed {})),
        // A packet with no body (say, from a newer peer) still frames and decodes.
        IdmPacket {
            magic: MAGIC,
            request_id: 1,
            stream_id: 0,
            body: None,
        },
    ];
    let mut wire = Vec::new();
    let mut writer = IdmWriter::new(&mut wire);
    for p in &packets {
        writer.write_packet(p).unwrap();
    }
    let got: Vec<_> = all_packets(&wire).into_iter().map(Result::unwrap).collect();
    assert_eq!(got, packets);
    assert_eq!(
        packets[1].body.as_ref().map(|b| match b {
            Body::Exit(e) => e.status(),
            _ => None,
        }),
        Some(Some(ExitStatus::Signal {
            signal: 9,
            core_dumped: false
        }))
    );
}

#[test]
fn exit_ack_wire_bytes() {
    // Field 13, an empty message: the guest matches on this frame, so it must not drift.
    let wire = frame(&IdmPacket::event(Body::ExitAck(proto::ExitAck {}))).unwrap();
    assert_eq!(wire, b"\x07\x00\x00\x00\x0dIDM1\x6a\x00");
    let got = all_packets(&wire);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].as_ref().unwrap().kind(), "exit_ack");
}

#[test]
fn byte_at_a_time() {
    let mut wire = frame(&ping(1)).unwrap();
    wire.extend(frame(&output(3, 300)).unwrap());
    let mut decoder = FrameDecoder::new();
    let mut got = Vec::new();
    for b in &wire {
        decoder.push(std::slice::from_ref(b));
        while let Some(item) = decoder.next_packet() {
            got.push(item.unwrap());
        }
    }
    assert_eq!(got, vec![ping(1), output(3, 300)]);
    assert_eq!(decoder.buffered(), 0);
    assert!(decoder.finish().is_none());
}

#[test]
fn largest_frame_passes_and_one_more_byte_fails() {
    // Find the payload size whose frame body is exactly MAX_FRAME_LEN.
    let base = frame(&output(1, 0)).unwrap().len() - 4;
    let mut n = MAX_FRAME_LEN - base - 8;
    while output(1, n).encoded_len() < MAX_FRAME_LEN {
        n += 1;
    }
    let max = output(1, n);
    assert_eq!(max.encoded_len(), MAX_FRAME_LEN);
    let bytes = frame(&max).unwrap();
    assert_eq!(bytes.len(), MAX_FRAME_LEN + 4);
    assert_eq!(all_packets(&bytes), vec![Ok(max)]);

    match frame(&output(1, n + 1)) {
        Err(IdmError::PacketTooLarge { len, max }) => {
            assert_eq!(max, MAX_FRAME_LEN);
            assert!(len > MAX_FRAME_LEN);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn oversized_length_prefix_is_skipped_not_buffered() {
    // A hostile peer announces 2 GiB: the decoder must not wait for (or allocate) it.
    let mut wire = 0x8000_0000u32.to_le_bytes().to_vec();
    wire.extend(frame(&ping(4)).unwrap());
    let mut decoder = FrameDecoder::new();
    decoder.push(&wire);
    match decoder.next_packet() {
        Some(Err(IdmError::Skipped {
            bytes: 4,
            reason: SkipReason::BadLength(0x8000_0000),
        })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(decoder.next_packet().unwrap().unwrap(), ping(4));
    assert!(decoder.next_packet().is_none());
}

#[test]
fn length_just_over_the_cap() {
    let mut wire = ((MAX_FRAME_LEN + 1) as u32).to_le_bytes().to_vec();
    wire.extend_from_slice(b"\rIDM1");
    // No offset of these 9 bytes starts a frame; the last 3 could start one (too short to
    // tell), so they are what is left at the end.
    assert_eq!(
        all_packets(&wire),
        vec![
            Err(IdmError::Skipped {
                bytes: 6,
                reason: SkipReason::BadLength(MAX_FRAME_LEN as u32 + 1)
            }
            .to_string()),
            Err("IDM stream ended in the middle of a frame (3 bytes left undecoded)".into()),
        ]
    );
}

#[test]
fn garbage_before_a_valid_frame() {
    let mut wire = b"[    1.234] random console noise\r\n".to_vec();
    wire.extend([0, 0, 0, 0, 5, 0, 0, 0, 1, 2, 3]); // zero length, then a length without magic
    wire.extend(frame(&ping(7)).unwrap());
    wire.extend(frame(&ping(8)).unwrap());
    let got = all_packets(&wire);
    let skipped = wire.len() - 2 * frame(&ping(7)).unwrap().len();
    assert_eq!(
        got,
        vec![
            Err(format!(
                "skipped {skipped} bytes of IDM stream that were not a valid frame \
                 (length prefix {} is outside 5..=1048576)",
                u32::from_le_bytes(*b"[   ")
            )),
            Ok(ping(7)),
            Ok(ping(8)),
        ]
    );
}

#[test]
fn garbage_between_frames_keeps_both_neighbours() {
    let mut wire = frame(&ping(1)).unwrap();
    wire.extend_from_slice(&[0xff; 37]);
    wire.extend(frame(&ping(2)).unwrap());
    let got = all_packets(&wire);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], Ok(ping(1)));
    assert!(
        got[1].as_ref().unwrap_err().starts_with("skipped 37 bytes"),
        "{got:?}"
    );
    assert_eq!(got[2], Ok(ping(2)));
}

#[test]
fn joining_mid_frame_resyncs_on_the_next_frame() {
    let first = frame(&output(1, 5000)).unwrap();
    let mut wire = first[1234..].to_vec();
    wire.extend(frame(&ping(3)).unwrap());
    let got = all_packets(&wire);
    assert_eq!(got.last(), Some(&Ok(ping(3))), "{got:?}");
    assert!(got[..got.len() - 1].iter().all(|g| g.is_err()), "{got:?}");
}

#[test]
fn magic_but_undecodable_body() {
    // Right length and magic, then a field with wire type 7 (invalid).
    let body = [b"\rIDM1".as_slice(), &[0x17, 0x00]].concat();
    let mut wire = (body.len() as u32).to_le_bytes().to_vec();
    wire.extend(&body);
    wire.extend(frame(&ping(5)).unwrap());
    let got = all_packets(&wire);
    assert_eq!(got.len(), 2, "{got:?}");
    let err = got[0].as_ref().unwrap_err();
    assert!(
        err.starts_with(&format!("skipped {} bytes", 4 + body.len())),
        "{err}"
    );
    assert!(err.contains("frame does not decode"), "{err}");
    assert_eq!(got[1], Ok(ping(5)));
}

#[test]
fn a_second_magic_field_with_another_value_is_refused() {
    let mut packet = ping(1);
    packet.magic = 0;
    let mut body = b"\rIDM1".to_vec();
    body.extend(packet.encode_to_vec());
    body.extend([0x0d, 1, 2, 3, 4]); // field 1 again: last one wins in protobuf
    let mut wire = (body.len() as u32).to_le_bytes().to_vec();
    wire.extend(&body);
    let got = all_packets(&wire);
    assert!(got.iter().all(|g| g.is_err()), "{got:?}");
    assert!(
        got[0].as_ref().unwrap_err().contains("no packet magic"),
        "{got:?}"
    );
}

#[test]
fn truncated_stream() {
    let bytes = frame(&output(2, 100)).unwrap();
    let cut = &bytes[..bytes.len() - 10];
    let got = all_packets(cut);
    assert_eq!(
        got,
        vec![Err(format!(
            "IDM stream ended in the middle of a frame ({} bytes left undecoded)",
            cut.len()
        ))]
    );
    // Fewer bytes than a length prefix.
    assert_eq!(
        all_packets(&bytes[..3]),
        vec![Err(
            "IDM stream ended in the middle of a frame (3 bytes left undecoded)".into()
        )]
    );
}

#[test]
fn decoder_memory_stays_bounded_under_garbage() {
    let mut decoder = FrameDecoder::new();
    let junk = vec![0xa5u8; 64 * 1024];
    for _ in 0..64 {
        decoder.push(&junk);
        while let Some(item) = decoder.next_packet() {
            assert!(matches!(item, Err(IdmError::Skipped { .. })));
        }
        assert!(decoder.buffered() < 8, "{}", decoder.buffered());
    }
}

#[tokio::test]
async fn tokio_codec_round_trip_and_garbage() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let mut tx = FramedWrite::new(a, IdmCodec::new());
    let mut rx = FramedRead::new(b, IdmCodec::new());
    let writer = tokio::spawn(async move {
        tx.send(ping(1)).await.unwrap();
        tx.send(output(7, 200_000)).await.unwrap();
        // Garbage straight on the wire, then more frames: the stream must survive it.
        tokio::io::AsyncWriteExt::write_all(tx.get_mut(), b"garbage!")
            .await
            .unwrap();
        tx.send(&ping(2)).await.unwrap();
        let mut too_big = output(1, MAX_FRAME_LEN);
        let err = tx.send(&too_big).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        too_big.body = None;
        tx.send(too_big).await.unwrap();
        // Half a frame, then end of stream.
        let half = frame(&ping(3)).unwrap();
        tokio::io::AsyncWriteExt::write_all(tx.get_mut(), &half[..6])
            .await
            .unwrap();
    });
    let mut got = Vec::new();
    while let Some(item) = rx.next().await {
        got.push(item.unwrap().map_err(|e| e.to_string()));
    }
    writer.await.unwrap();
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(got[0], Ok(ping(1)));
    assert_eq!(got[1], Ok(output(7, 200_000)));
    assert!(
        got[2].as_ref().unwrap_err().starts_with("skipped 8 bytes"),
        "{got:?}"
    );
    assert_eq!(got[3], Ok(ping(2)));
    assert_eq!(got[4].as_ref().unwrap().body, None);
    assert_eq!(
        got[5],
        Err("IDM stream ended in the middle of a frame (6 bytes left undecoded)".into())
    );
}

/// The flow-control messages and fields survive the wire and name themselves in logs; a
/// packet from a peer that predates them decodes with the fields at their "off" values.
#[test]
fn exec_flow_control_messages_round_trip() {
    let packets = [
        IdmPacket::stream(3, Body::ExecCredit(proto::ExecCredit { bytes: 65536 })),
        IdmPacket::stream(3, Body::ExecSignal(proto::ExecSignal { signal: 2 })),
        IdmPacket::stream(3, Body::ExecCancel(proto::ExecCancel {})),
        IdmPacket::event(Body::ExecCancel(proto::ExecCancel {})),
        IdmPacket::stream(
            3,
            Body::ExecStart(proto::ExecStart {
                argv: vec!["cat".into()],
                output_window: 262_144,
                ..Default::default()
            }),
        ),
        IdmPacket::stream(
            3,
            Body::ExecStarted(proto::ExecStarted {
                pid: 9,
                stdin_window: 262_144,
                output_flow_control: true,
            }),
        ),
    ];
    let mut wire = Vec::new();
    for p in &packets {
        encode_frame(p, &mut wire).unwrap();
    }
    let got: Vec<IdmPacket> = all_packets(&wire).into_iter().map(|p| p.unwrap()).collect();
    assert_eq!(got, packets);
    let kinds: Vec<&str> = got.iter().map(IdmPacket::kind).collect();
    assert_eq!(
        kinds,
        [
            "exec_credit",
            "exec_signal",
            "exec_cancel",
            "exec_cancel",
            "exec_start",
            "exec_started"
        ]
    );
    // An ExecStarted from a guest before flow control: pid only.
    let old = proto::ExecStarted {
        pid: 9,
        ..Default::default()
    };
    let decoded = proto::ExecStarted::decode(&old.encode_to_vec()[..]).unwrap();
    assert_eq!(
        (decoded.stdin_window, decoded.output_flow_control),
        (0, false)
    );
}
