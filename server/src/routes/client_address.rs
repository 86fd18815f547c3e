//! Which address a request is from: the connection's peer, or, when the peer is one of the
//! reverse proxies the server is told to trust (`TRUSTED_PROXIES`), the address that proxy
//! says it forwarded for (`X-Forwarded-For`). Every limit kept per address keys on it: behind a
//! proxy every client would otherwise share the proxy's address, and one client's junk would
//! spend everyone's budget. Nobody else's `X-Forwarded-For` is believed: a client could name
//! any address it likes.

use std::net::IpAddr;

use axum::http::HeaderMap;

/// A network: an address and how many of its leading bits are fixed (`10.0.0.0/8`,
/// `2001:db8::/32`; a lone address is the whole of its length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let bad = || format!("{text:?} is not an address or a network (10.0.0.0/8, ::1, fd00::/8)");
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix.parse::<u8>().map_err(|_| bad())?)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(bits);
        if prefix > bits {
            return Err(bad());
        }
        Ok(Cidr { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                same_leading_bits(u128::from(network.to_bits()) << 96, u128::from(address.to_bits()) << 96, self.prefix)
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                same_leading_bits(network.to_bits(), address.to_bits(), self.prefix)
            }
            _ => false,
        }
    }
}

fn same_leading_bits(one: u128, other: u128, bits: u8) -> bool {
    let mask = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits)) };
    one & mask == other & mask
}

/// An IPv4 address mapped into IPv6 (`::ffff:10.0.0.1`, as a dual-stack socket reports it) as
/// the IPv4 address it is.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// The reverse proxies whose `X-Forwarded-For` is believed (none by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn new(networks: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(address))
    }

    /// The client's address: walking back from the peer through `X-Forwarded-For` (whose
    /// last entry the nearest proxy appended) while the hop is a trusted proxy, the first one
    /// that is not. An entry that is not an address ends the walk at the proxy that passed it;
    /// entries further left (the client's own, to a first proxy that appends) are never read.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        // Bytes, not text: a client's junk byte in its own entry must not hide the whole value.
        let forwarded: Vec<&[u8]> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
            .collect();
        for hop in forwarded.iter().rev() {
            let Some(address) = std::str::from_utf8(hop).ok().and_then(parse_hop) else {
                return client;
            };
            client = canonical(address);
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }
}

/// An address as proxies write it: bare, with a port (`192.0.2.1:5678`), or bracketed
/// (`[2001:db8::1]`, `[2001:db8::1]:443`).
fn parse_hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(address) = text.parse() {
        return Some(address);
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(|port| port.parse::<u16>().is_ok());
        return if port_ok { inside.parse().ok() } else { None };
    }
    let (host, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn proxies(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(networks.iter().map(|network| network.parse().unwrap()).collect())
    }

    #[test]
    fn networks_parse_and_contain_their_addresses() {
        let private: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(private.contains("10.200.3.4".parse().unwrap()));
        assert!(private.contains("::ffff:10.1.2.3".parse().unwrap()), "an IPv4-mapped address is its IPv4");
        assert!(!private.contains("11.0.0.1".parse().unwrap()));
        let lone: Cidr = "192.0.2.7".parse().unwrap();
        assert!(lone.contains("192.0.2.7".parse().unwrap()) && !lone.contains("192.0.2.8".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()) && !v6.contains("2001:db9::1".parse().unwrap()));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "::/129", "ten", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_a_trusted_proxy_is_believed_about_whom_it_forwarded_for() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        // A trusted proxy's word, through a chain of trusted proxies.
        assert_eq!(
            trusted.client_address(peer, &forwarded(&["203.0.113.9"])),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        let chain = forwarded(&["198.51.100.1, 203.0.113.9", "10.0.0.7"]);
        assert_eq!(
            trusted.client_address(peer, &chain),
            "203.0.113.9".parse::<IpAddr>().unwrap(),
            "the first untrusted hop"
        );
        // What the client itself wrote at the left is not believed past an untrusted hop.
        let spoofed = forwarded(&["1.2.3.4, 203.0.113.9"]);
        assert_eq!(trusted.client_address(peer, &spoofed), "203.0.113.9".parse::<IpAddr>().unwrap());
        // An untrusted peer is the client, whatever it says.
        let stranger: IpAddr = "203.0.113.50".parse().unwrap();
        assert_eq!(trusted.client_address(stranger, &forwarded(&["1.2.3.4"])), stranger);
        assert_eq!(TrustedProxies::default().client_address(peer, &forwarded(&["1.2.3.4"])), peer);
        // Junk ends the walk at the proxy that passed it; no header leaves the peer.
        assert_eq!(trusted.client_address(peer, &forwarded(&["junk"])), peer);
        assert_eq!(trusted.client_address(peer, &HeaderMap::new()), peer);
        // Ports and brackets, as some proxies write them.
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(trusted.client_address(peer, &forwarded(&["203.0.113.9:5678"])), client);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(trusted.client_address(peer, &forwarded(&["[2001:db8::1]:443"])), v6);
        assert_eq!(trusted.client_address(peer, &forwarded(&["[2001:db8::1]"])), v6);
        // A byte that is not text in the client's own entry hides only that entry.
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", axum::http::HeaderValue::from_bytes(b"\xff\xfe, 203.0.113.9").unwrap());
        assert_eq!(trusted.client_address(peer, &headers), client);
    }
}
