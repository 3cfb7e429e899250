//! `type: udp_ntp`: an SNTPv4 client request (RFC 4330) answered by a synchronised server whose
//! clock is within `max_offset` of ours, when that is set.
//!
//! The transmit timestamp of the request is random, as RFC 9109 advises (it does not reveal our
//! clock, and it makes the reply's origin timestamp a 64-bit proof that the reply answers this
//! request); our send time is kept locally for the offset.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::{
    checker::{CheckFailure, Checker},
    udp::{Verdict, connected, exchange},
};

/// An NTP packet without extension fields or MAC.
const PACKET: usize = 48;
/// Leap indicator 0, version 4, mode 3 (client).
const CLIENT_HEAD: u8 = 0b00_100_011;
const MODE_SERVER: u8 = 4;
/// Leap indicator 3: "clock unsynchronised".
const LEAP_ALARM: u8 = 3;
/// Stratum 16 means unsynchronised; 0 is a kiss-o'-death or an unspecified stratum.
const STRATUM_UNSYNCHRONISED: u8 = 16;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_TO_UNIX: u64 = 2_208_988_800;

#[derive(Clone, Copy, Debug)]
pub struct NtpCheck {
    max_offset: Option<Duration>,
}

impl NtpCheck {
    pub fn new(max_offset: Option<Duration>) -> Self {
        Self { max_offset }
    }

    /// Judges `reply` to the request whose transmit timestamp was `transmit`, sent at `sent` and
    /// received at `received` (both by our clock). Public for the fuzz target
    /// (`fuzz/fuzz_targets/health_ntp.rs`).
    #[doc(hidden)]
    pub fn judge(
        &self,
        transmit: [u8; 8],
        sent: SystemTime,
        received: SystemTime,
        reply: &[u8],
    ) -> Result<Verdict, CheckFailure> {
        let Some(reply) = reply.get(..PACKET) else {
            return Err(CheckFailure::Malformed(format!(
                "NTP reply of {} bytes, expected {PACKET}",
                reply.len()
            )));
        };
        let mode = reply[0] & 0b111;
        if mode != MODE_SERVER {
            return Err(CheckFailure::Malformed(format!("NTP mode {mode}, expected {MODE_SERVER} (server)")));
        }
        if reply[24..32] != transmit {
            return Err(CheckFailure::NtpOrigin);
        }
        let (leap, stratum) = (reply[0] >> 6, reply[1]);
        if leap == LEAP_ALARM || stratum == 0 || stratum >= STRATUM_UNSYNCHRONISED {
            return Err(CheckFailure::NtpUnsynchronised { stratum, leap });
        }
        if let Some(max) = self.max_offset {
            let server_received = ntp_time(&reply[32..40]);
            let server_sent = ntp_time(&reply[40..48]);
            let offset =
                ((server_received - unix_seconds(sent)) + (server_sent - unix_seconds(received))) / 2.0;
            let offset = Duration::try_from_secs_f64(offset.abs()).unwrap_or(Duration::MAX);
            if offset > max {
                return Err(CheckFailure::NtpOffset { offset, max });
            }
        }
        Ok(Verdict::Healthy)
    }
}

/// The request: our head byte, zeros, and the random transmit timestamp.
fn request(transmit: [u8; 8]) -> [u8; PACKET] {
    let mut packet = [0; PACKET];
    packet[0] = CLIENT_HEAD;
    packet[40..48].copy_from_slice(&transmit);
    packet
}

/// An NTP timestamp as seconds since the Unix epoch. Seconds below 2^31 belong to era 1 (from
/// 2036), as RFC 4330 section 3 suggests.
fn ntp_time(timestamp: &[u8]) -> f64 {
    let seconds = u32::from_be_bytes([timestamp[0], timestamp[1], timestamp[2], timestamp[3]]);
    let fraction = u32::from_be_bytes([timestamp[4], timestamp[5], timestamp[6], timestamp[7]]);
    let era = if seconds & 0x8000_0000 == 0 { 1u64 << 32 } else { 0 };
    let unix = (u64::from(seconds) + era) as f64 - NTP_TO_UNIX as f64;
    unix + f64::from(fraction) / 4_294_967_296.0
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH).map_or(0.0, |since| since.as_secs_f64())
}

impl Checker for NtpCheck {
    fn probe(&self, target: SocketAddr) -> BoxFuture<'_, Result<Duration, CheckFailure>> {
        Box::pin(async move {
            let transmit = fastrand::u64(..).to_be_bytes();
            let started = Instant::now();
            let sent = SystemTime::now();
            exchange(&connected(target).await?, &request(transmit), |reply| {
                self.judge(transmit, sent, SystemTime::now(), reply)
            })
            .await?;
            Ok(started.elapsed())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRANSMIT: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

    /// `time` as an NTP timestamp.
    fn ntp(time: SystemTime) -> [u8; 8] {
        let since = time.duration_since(UNIX_EPOCH).unwrap();
        let seconds = (since.as_secs() + NTP_TO_UNIX) as u32;
        let fraction = ((u64::from(since.subsec_nanos()) << 32) / 1_000_000_000) as u32;
        let mut out = [0; 8];
        out[..4].copy_from_slice(&seconds.to_be_bytes());
        out[4..].copy_from_slice(&fraction.to_be_bytes());
        out
    }

    /// A server reply (leap 0, version 4, mode 4, stratum 2) whose clock is `skew` ahead.
    fn reply(now: SystemTime, skew: Duration) -> [u8; PACKET] {
        let mut packet = [0; PACKET];
        packet[0] = 0b00_100_100;
        packet[1] = 2;
        packet[24..32].copy_from_slice(&TRANSMIT);
        packet[32..40].copy_from_slice(&ntp(now + skew));
        packet[40..48].copy_from_slice(&ntp(now + skew));
        packet
    }

    fn judge(check: NtpCheck, reply: &[u8]) -> Result<Verdict, CheckFailure> {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        check.judge(TRANSMIT, now, now, reply)
    }

    const NOW: Duration = Duration::from_secs(1_780_000_000);

    #[test]
    fn the_request_is_a_v4_client_packet_carrying_our_transmit_timestamp() {
        let packet = request(TRANSMIT);
        assert_eq!(packet[0] >> 6, 0, "leap indicator");
        assert_eq!((packet[0] >> 3) & 0b111, 4, "version");
        assert_eq!(packet[0] & 0b111, 3, "mode client");
        assert_eq!(packet[40..48], TRANSMIT);
        assert!(packet[..40].iter().skip(1).all(|b| *b == 0));
    }

    #[test]
    fn a_synchronised_reply_within_max_offset_passes() {
        let now = UNIX_EPOCH + NOW;
        let check = NtpCheck::new(Some(Duration::from_millis(500)));
        assert!(matches!(judge(check, &reply(now, Duration::from_millis(200))), Ok(Verdict::Healthy)));
        assert!(matches!(
            judge(NtpCheck::new(None), &reply(now, Duration::from_secs(3600))),
            Ok(Verdict::Healthy)
        ));
    }

    #[test]
    fn an_offset_beyond_max_offset_fails() {
        let now = UNIX_EPOCH + NOW;
        let check = NtpCheck::new(Some(Duration::from_millis(500)));
        let Err(CheckFailure::NtpOffset { offset, max }) = judge(check, &reply(now, Duration::from_secs(2)))
        else {
            panic!("an offset failure");
        };
        assert_eq!(max, Duration::from_millis(500));
        assert!(offset.abs_diff(Duration::from_secs(2)) < Duration::from_millis(1), "{offset:?}");
    }

    #[test]
    fn unsynchronised_servers_fail() {
        let now = UNIX_EPOCH + NOW;
        for (leap, stratum) in [(3, 2), (0, 0), (0, 16), (3, 16)] {
            let mut packet = reply(now, Duration::ZERO);
            packet[0] = (leap << 6) | (packet[0] & 0b0011_1111);
            packet[1] = stratum;
            assert_eq!(
                judge(NtpCheck::new(None), &packet).unwrap_err(),
                CheckFailure::NtpUnsynchronised { stratum, leap }
            );
        }
    }

    #[test]
    fn another_origin_another_mode_or_a_short_packet_fail() {
        let now = UNIX_EPOCH + NOW;
        let mut other_origin = reply(now, Duration::ZERO);
        other_origin[31] ^= 1;
        assert_eq!(judge(NtpCheck::new(None), &other_origin).unwrap_err(), CheckFailure::NtpOrigin);
        let mut client_mode = reply(now, Duration::ZERO);
        client_mode[0] = CLIENT_HEAD;
        let failure = judge(NtpCheck::new(None), &client_mode).unwrap_err();
        assert_eq!(failure.to_string(), "malformed reply: NTP mode 3, expected 4 (server)");
        let failure = judge(NtpCheck::new(None), &reply(now, Duration::ZERO)[..47]).unwrap_err();
        assert_eq!(failure.to_string(), "malformed reply: NTP reply of 47 bytes, expected 48");
    }

    #[test]
    fn ntp_times_convert_across_the_2036_era() {
        assert_eq!(ntp_time(&[0x83, 0xaa, 0x7e, 0x80, 0, 0, 0, 0]), 0.0, "the Unix epoch");
        assert_eq!(ntp_time(&[0, 0, 0, 0, 0x80, 0, 0, 0]), 2_085_978_496.5, "era 1 begins in 2036");
    }
}
