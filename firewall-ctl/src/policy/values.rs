//! Single values: protocols, ports, addresses, names, numbers. Each function
//! reads one YAML scalar and either returns the typed value or an error
//! located at that scalar.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{
    error::{ErrorKind, PolicyError},
    validated::{PeerTarget, PortRange, Ports, Protocol},
    yaml::{Node, Value},
};

/// The text of a scalar, or a "wrong type" error saying what was expected.
pub fn scalar<'a>(node: &'a Node, what: &'static str, expected: &'static str) -> Result<&'a str, PolicyError> {
    match &node.value {
        Value::Scalar { text, .. } if !node.is_null() => Ok(text),
        _ => Err(wrong_type(node, what, expected)),
    }
}

pub fn wrong_type(node: &Node, what: &'static str, expected: &'static str) -> PolicyError {
    PolicyError::new(&node.at, ErrorKind::WrongType { what, found: node.kind_name(), expected })
}

/// A scalar or a list of scalars (`ports: 22` or `ports: [22, 80]`), each
/// with its node for error positions.
pub fn one_or_many<'a>(
    node: &'a Node,
    key: &'static str,
    what: &'static str,
    expected: &'static str,
) -> Result<Vec<(&'a Node, &'a str)>, PolicyError> {
    let items: Vec<&Node> = match &node.value {
        Value::Seq(items) if items.is_empty() => return Err(PolicyError::new(&node.at, ErrorKind::EmptyList(key))),
        Value::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    items.into_iter().map(|n| Ok((n, scalar(n, what, expected)?))).collect()
}

/// `[a-z0-9][a-z0-9._-]{0,62}`, the name of a group or prefix list.
pub fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&b.len()) && ok(&b[0]) && b.iter().all(|c| ok(c) || matches!(c, b'.' | b'_' | b'-'))
}

pub fn name(node: &Node, what: &'static str) -> Result<String, PolicyError> {
    let text = scalar(node, "a name", "a name of a-z 0-9 . _ -")?;
    if !is_valid_name(text) {
        return Err(PolicyError::new(&node.at, ErrorKind::InvalidName { what, name: text.to_owned() }));
    }
    Ok(text.to_owned())
}

/// Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no '/', ':' or
/// whitespace, and not "." or "..".
pub fn interface_name(node: &Node) -> Result<String, PolicyError> {
    let text = scalar(node, "an interface name", "an interface name such as eth0")?;
    let bad = text.is_empty()
        || text.len() > 15
        || text == "."
        || text == ".."
        || text.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(PolicyError::new(&node.at, ErrorKind::InvalidInterfaceName(text.to_owned())));
    }
    Ok(text.to_owned())
}

pub fn protocol(node: &Node) -> Result<Protocol, PolicyError> {
    let text = scalar(node, "a protocol", "tcp, udp, icmp, icmpv6, all or a number 0-255")?;
    Ok(match text.to_ascii_lowercase().as_str() {
        "all" | "-1" => Protocol::All,
        other => match firewall_common::proto::by_name(other).or_else(|| parse_decimal(other)?.try_into().ok()) {
            Some(n) => Protocol::from_number(n),
            None => return Err(PolicyError::new(&node.at, ErrorKind::InvalidProtocol(text.to_owned()))),
        },
    })
}

/// Digits only (no sign, no `0x`, no `_`), as a u64; `None` if not a number.
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn service_port(name: &str) -> Option<u16> {
    Some(match name {
        "ssh" | "sftp" => 22,
        "ftp" => 21,
        "http" => 80,
        "https" => 443,
        "rdp" => 3389,
        "dns" => 53,
        "mysql" => 3306,
        "postgres" => 5432,
        _ => return None,
    })
}

/// `ports:` — a number, "FROM-TO", a service name, `all`, or a list of them.
pub fn ports(node: &Node) -> Result<Ports, PolicyError> {
    const EXPECTED: &str = "a port number, \"FROM-TO\", a service name or all";
    let mut ranges = Vec::new();
    let mut any = false;
    for (item, text) in one_or_many(node, "ports", "a port", EXPECTED)? {
        let err = |kind| Err(PolicyError::new(&item.at, kind));
        let lower = text.trim().to_ascii_lowercase();
        if lower == "all" {
            any = true;
            continue;
        }
        if let Some(port) = service_port(&lower) {
            ranges.push(PortRange { first: port, last: port });
            continue;
        }
        let (first, last) = match lower.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (lower.as_str(), lower.as_str()),
        };
        let (Some(first), Some(last)) = (parse_decimal(first), parse_decimal(last)) else {
            return err(ErrorKind::InvalidPort(text.to_owned()));
        };
        if !(1..=65535).contains(&first) || !(1..=65535).contains(&last) {
            return err(ErrorKind::PortOutOfRange(text.to_owned()));
        }
        if first > last {
            return err(ErrorKind::ReversedRange(text.to_owned()));
        }
        // Both are within 1..=65535, checked above.
        let (first, last) = (first as u16, last as u16);
        ranges.push(PortRange { first, last });
    }
    Ok(if any { Ports::Any } else { Ports::Ranges(ranges) })
}

/// `true` or `false`, exactly (YAML's `yes`, `on` and the rest are refused,
/// as every scalar is read as text).
pub fn boolean(node: &Node, key: &'static str) -> Result<bool, PolicyError> {
    match scalar(node, "a boolean", "true or false")? {
        "true" => Ok(true),
        "false" => Ok(false),
        text => Err(PolicyError::new(&node.at, ErrorKind::InvalidBoolean { key, value: text.to_owned() })),
    }
}

/// A number within `min..=max`, for `icmp_type`, `icmp_code` and `conntrack:`.
pub fn number(node: &Node, key: &'static str, min: u64, max: u64) -> Result<u64, PolicyError> {
    let text = scalar(node, "a number", "a whole number")?;
    match parse_decimal(text) {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(PolicyError::new(&node.at, ErrorKind::OutOfRange { key, value: text.to_owned(), min, max })),
    }
}

pub fn icmp(node: &Node, key: &'static str) -> Result<u8, PolicyError> {
    let text = scalar(node, "a number", "a number 0-255")?;
    parse_decimal(text)
        .and_then(|n| u8::try_from(n).ok())
        .ok_or_else(|| PolicyError::new(&node.at, ErrorKind::InvalidIcmp { key, value: text.to_owned() }))
}

/// Why a CIDR text is not a valid network, as the "expected" half of the message.
pub enum CidrError {
    NotCidr(&'static str),
    HostBits(IpNet),
}

/// `10.0.0.0/8`, `::/0`, or a bare address (= /32 or /128). Host bits must
/// be zero: `10.0.0.1/8` is refused rather than silently widened.
pub fn parse_cidr(text: &str) -> Result<IpNet, CidrError> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr =
        addr.parse().map_err(|_| CidrError::NotCidr("expected an IPv4 or IPv6 address before the '/'"))?;
    let (max, family_msg) = match addr {
        IpAddr::V4(_) => (32, "prefix length must be 0-32 for IPv4"),
        IpAddr::V6(_) => (128, "prefix length must be 0-128 for IPv6"),
    };
    let len = match len {
        None => max,
        Some(l) => match parse_decimal(l) {
            Some(n) if n <= u64::from(max) => n as u8,
            _ => return Err(CidrError::NotCidr(family_msg)),
        },
    };
    let net = IpNet::new(addr, len).map_err(|_| CidrError::NotCidr(family_msg))?;
    if net.trunc() != net {
        return Err(CidrError::HostBits(net.trunc()));
    }
    Ok(net)
}

/// An address/CIDR item of `members:` or `prefix_lists:`, or a peer's CIDR.
pub fn cidr(node: &Node, text: &str) -> Result<IpNet, PolicyError> {
    parse_cidr(text).map_err(|e| {
        let kind = match e {
            CidrError::NotCidr(reason) => ErrorKind::InvalidCidr { value: text.to_owned(), reason },
            CidrError::HostBits(network) => {
                ErrorKind::HostBitsSet { value: text.to_owned(), network: network.to_string() }
            }
        };
        PolicyError::new(&node.at, kind)
    })
}

/// One `source`/`destination` item. Whether a named group or list exists is
/// checked after all files are merged.
pub fn peer(node: &Node, text: &str, key: &'static str) -> Result<PeerTarget, PolicyError> {
    let at = &node.at;
    if let Some(group) = text.strip_prefix("sg:") {
        if !is_valid_name(group) {
            let kind = ErrorKind::InvalidName { what: "group", name: group.to_owned() };
            return Err(PolicyError::new(at, kind));
        }
        return Ok(PeerTarget::Group(group.to_owned()));
    }
    if let Some(list) = text.strip_prefix("pl:") {
        if !is_valid_name(list) {
            let kind = ErrorKind::InvalidName { what: "prefix list", name: list.to_owned() };
            return Err(PolicyError::new(at, kind));
        }
        return Ok(PeerTarget::PrefixList(list.to_owned()));
    }
    // A word that is neither a CIDR nor an address (`sg-123` without `sg:`,
    // `0.0.0.0/0 ` typos aside) gets the "expected one of" message, not a
    // CIDR-specific one.
    if !text.contains('/') && text.parse::<IpAddr>().is_err() {
        return Err(PolicyError::new(at, ErrorKind::InvalidPeer { key, value: text.to_owned() }));
    }
    cidr(node, text).map(PeerTarget::Cidr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_valid_name("sg-0a1b2c"));
        assert!(is_valid_name("web.server_1"));
        assert!(!is_valid_name("-web"));
        assert!(!is_valid_name("Web"));
        assert!(!is_valid_name(""));
        assert!(is_valid_name(&"a".repeat(63)));
        assert!(!is_valid_name(&"a".repeat(64)));
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.0.0.5").ok(), "10.0.0.5/32".parse().ok());
        assert_eq!(parse_cidr("fd00::5").ok(), "fd00::5/128".parse().ok());
        assert_eq!(parse_cidr("::/0").ok(), "::/0".parse().ok());
        assert!(matches!(parse_cidr("10.0.0.1/8"), Err(CidrError::HostBits(_))));
        assert!(matches!(parse_cidr("10.0.0.0/33"), Err(CidrError::NotCidr(_))));
        assert!(matches!(parse_cidr("fd00::/129"), Err(CidrError::NotCidr(_))));
        assert!(matches!(parse_cidr("10.0.0.0/+8"), Err(CidrError::NotCidr(_))));
        assert!(matches!(parse_cidr("010.0.0.0/8"), Err(CidrError::NotCidr(_))));
    }
}
