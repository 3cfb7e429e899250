//! Fixed-size attribute values, checked: a value of the wrong length is a decode error naming
//! the attribute, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{DecodeError, NlaBuffer, NlasIterator};

use super::constants::INET_ADDR_LEN;

pub(super) fn array<const N: usize>(what: &str, value: &[u8]) -> Result<[u8; N], DecodeError> {
    value
        .try_into()
        .map_err(|_| DecodeError::from(format!("{what}: expected {N} bytes, got {}", value.len())))
}

pub(super) fn u8_value(what: &str, value: &[u8]) -> Result<u8, DecodeError> {
    Ok(u8::from_ne_bytes(array(what, value)?))
}

pub(super) fn u16_ne(what: &str, value: &[u8]) -> Result<u16, DecodeError> {
    Ok(u16::from_ne_bytes(array(what, value)?))
}

pub(super) fn u16_be(what: &str, value: &[u8]) -> Result<u16, DecodeError> {
    Ok(u16::from_be_bytes(array(what, value)?))
}

pub(super) fn u32_ne(what: &str, value: &[u8]) -> Result<u32, DecodeError> {
    Ok(u32::from_ne_bytes(array(what, value)?))
}

/// A `NLA_NUL_STRING`: the text up to the first NUL (the kernel writes exactly one).
pub(super) fn nul_string(what: &str, value: &[u8]) -> Result<String, DecodeError> {
    let text = value.split(|&byte| byte == 0).next().unwrap_or_default();
    String::from_utf8(text.to_vec()).map_err(|err| DecodeError::from(format!("{what}: {err}")))
}

/// Length of a string emitted with its terminating NUL, as `nla_put_string` does.
pub(super) fn nul_string_len(text: &str) -> usize {
    text.len() + 1
}

pub(super) fn emit_nul_string(text: &str, buffer: &mut [u8]) {
    let (body, nul) = buffer.split_at_mut(text.len());
    body.copy_from_slice(text.as_bytes());
    nul.fill(0);
}

/// Parses a run of attributes with `parse`, stopping at the first malformed one.
pub(super) fn parse_nlas<A>(
    value: &[u8],
    parse: impl Fn(&NlaBuffer<&[u8]>) -> Result<A, DecodeError>,
) -> Result<Vec<A>, DecodeError> {
    NlasIterator::new(value).map(|nla| nla.and_then(|nla| parse(&nla))).collect()
}

/// A `union nf_inet_addr` as it travels: 16 bytes, an IPv4 address in the first 4 and zeros
/// after (`nla_put(skb, ..., sizeof(svc->addr), &svc->addr)` in ip_vs_ctl.c). Which of the two
/// it holds is said by the family attribute beside it, not by the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InetAddr(pub [u8; INET_ADDR_LEN]);

impl InetAddr {
    pub fn from_ip(addr: IpAddr) -> Self {
        let mut bytes = [0; INET_ADDR_LEN];
        match addr {
            IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => bytes = v6.octets(),
        }
        Self(bytes)
    }

    pub fn to_ipv4(self) -> Ipv4Addr {
        let [a, b, c, d, ..] = self.0;
        Ipv4Addr::new(a, b, c, d)
    }

    pub fn to_ipv6(self) -> Ipv6Addr {
        Ipv6Addr::from(self.0)
    }

    /// The kernel always sends 16 bytes; a 4-byte IPv4 value (which the kernel would accept,
    /// `nla_memcpy` zero-fills) is taken too. It is emitted back as 16 bytes.
    pub(super) fn parse(what: &str, value: &[u8]) -> Result<Self, DecodeError> {
        match value.len() {
            4 => {
                let mut bytes = [0; INET_ADDR_LEN];
                bytes[..4].copy_from_slice(value);
                Ok(Self(bytes))
            }
            _ => Ok(Self(array(what, value)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_lengths_are_errors_that_name_the_attribute() {
        let err = u32_ne("IPVS_DEST_ATTR_WEIGHT", &[1, 2, 3]).unwrap_err();
        assert!(err.to_string().contains("IPVS_DEST_ATTR_WEIGHT: expected 4 bytes, got 3"), "{err}");
        assert!(InetAddr::parse("IPVS_SVC_ATTR_ADDR", &[0; 8]).is_err());
    }

    #[test]
    fn strings_end_at_the_first_nul() {
        assert_eq!(nul_string("x", b"wrr\0").unwrap(), "wrr");
        assert_eq!(nul_string("x", b"wrr").unwrap(), "wrr");
        assert_eq!(nul_string("x", b"").unwrap(), "");
        assert!(nul_string("x", &[0xff, 0]).is_err());
    }

    #[test]
    fn ipv4_addresses_use_the_first_four_bytes() {
        let addr = InetAddr::from_ip("10.1.2.3".parse().unwrap());
        assert_eq!(addr.0, [10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(addr.to_ipv4(), Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(InetAddr::parse("a", &[10, 1, 2, 3]).unwrap(), addr);
    }
}
