//! Unit tests of the client's reply matching and batch limits.

use netlink_packet_core::NLM_F_MULTIPART;

use super::*;
use crate::model::{Destination, Forwarding};

#[cfg(target_endian = "little")]
fn ack(sequence: u32, errno: i32) -> Vec<u8> {
    let mut bytes = vec![36, 0, 0, 0, 2, 0, 0, 1];
    bytes.extend(sequence.to_ne_bytes());
    bytes.extend([0; 4]);
    bytes.extend((-errno).to_ne_bytes());
    bytes.extend([16, 0, 0, 0, 0x1c, 0, 5, 0]);
    bytes.extend(sequence.to_ne_bytes());
    bytes.extend([0; 4]);
    bytes
}

fn pending(sequences: &[u32]) -> HashMap<u32, Vec<IpvsMessage>> {
    sequences.iter().map(|sequence| (*sequence, Vec::new())).collect()
}

#[cfg(target_endian = "little")]
#[test]
fn acks_are_matched_by_sequence_whatever_their_order() {
    let mut datagram = ack(11, libc::EEXIST);
    datagram.extend(ack(99, 0)); // left over from an abandoned round: skipped
    datagram.extend(ack(10, 0));
    let (mut waiting, mut answers) = (pending(&[10, 11, 12]), HashMap::new());
    take_replies(&datagram, &mut waiting, &mut answers).unwrap();
    assert!(matches!(answers.get(&10), Some(Answer::Ok(_))));
    assert!(matches!(answers.get(&11), Some(Answer::Refused(libc::EEXIST))));
    assert!(!answers.contains_key(&99));
    assert_eq!(waiting.keys().copied().collect::<Vec<_>>(), [12], "12 still waits for its ack");
}

#[test]
fn dump_messages_are_collected_until_done() {
    let message = IpvsMessage::new(IpvsCmd::NewDest, vec![IpvsAttr::Dest(vec![])]);
    let mut datagram = packet::encode_request(0x1c, 5, NLM_F_MULTIPART, message.clone());
    datagram.extend(packet::encode_request(0x1c, 5, NLM_F_MULTIPART, message.clone()));
    let (mut waiting, mut answers) = (pending(&[5]), HashMap::new());
    take_replies(&datagram, &mut waiting, &mut answers).unwrap();
    assert!(answers.is_empty(), "no DONE yet");
    let mut done = vec![20, 0, 0, 0, 3, 0, 2, 0];
    done.extend(5u32.to_ne_bytes());
    done.extend([0; 8]);
    take_replies(&done, &mut waiting, &mut answers).unwrap();
    let Some(Answer::Ok(messages)) = answers.get(&5) else { panic!("dump not finished") };
    assert_eq!(messages, &[message.clone(), message]);
    assert!(waiting.is_empty());
}

#[cfg(target_endian = "little")]
#[test]
fn refused_ops_name_their_operation_and_missing_acks_are_unknown() {
    let service: ServiceKey = "tcp:10.0.0.1:80".parse().unwrap();
    let dest = Destination {
        key: "10.0.0.2:80".parse().unwrap(),
        weight: 1,
        forwarding: Forwarding::Nat,
        upper_threshold: 0,
        lower_threshold: 0,
    };
    let ops = [Op::AddDest(service, dest), Op::AddDest(service, dest), Op::DeleteService(service)];
    let requests: Vec<Request> = (1..=3).map(|sequence| Request { sequence, bytes: vec![] }).collect();
    let mut answers = HashMap::new();
    let (mut waiting, mut report) = (pending(&[1, 2, 3]), ApplyReport::default());
    let mut datagram = ack(1, 0);
    datagram.extend(ack(2, libc::EEXIST));
    take_replies(&datagram, &mut waiting, &mut answers).unwrap();
    report.outcomes = ops.iter().map(|_| OpOutcome::NotSent).collect();
    record_answers(&ops, 0, &requests, &mut answers, &mut report);
    assert!(matches!(report.outcomes[0], OpOutcome::Applied));
    assert!(matches!(report.outcomes[2], OpOutcome::Unknown));
    let (index, err) = report.refusals().next().unwrap();
    assert_eq!(index, 1);
    assert_eq!(
        err.to_string(),
        "creating destination 10.0.0.2:80 in tcp:10.0.0.1:80: File exists (os error 17)"
    );
    assert_eq!(err.errno(), Some(libc::EEXIST));
}

#[test]
fn batch_limits_follow_the_granted_buffers() {
    let forced = BatchLimits::for_buffers(16 << 20, 16 << 20);
    assert_eq!(forced.max_requests, 4096);
    assert_eq!(forced.max_dumps, 1, "a second dump in a datagram meets EBUSY");
    assert_eq!(forced.max_bytes, 8 << 20);
    // An unprivileged default: rmem_max 212992, doubled by the kernel.
    let default = BatchLimits::for_buffers(425_984, 425_984);
    assert_eq!(default.max_requests, 208);
    assert_eq!(default.max_dumps, 1);
    assert_eq!(BatchLimits::for_buffers(0, 0).max_requests, 1, "never zero");
}
