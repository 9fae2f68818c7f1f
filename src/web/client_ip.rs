//! The client's IP address: the TCP peer, unless that peer is a trusted reverse proxy, in which
//! case the nearest untrusted address in `X-Forwarded-For`. A client cannot spoof its way out
//! of a rate limit by sending its own `X-Forwarded-For`.

use std::net::{IpAddr, Ipv4Addr};

use actix_web::HttpRequest;
use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

/// Resolves the client address from the peer and the forwarding header.
pub fn resolve(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if !is_trusted(&client) {
        return client;
    }
    // Walk right to left: each hop was appended by the proxy we trust at that point.
    let hops = headers
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// The client IP of a request, honouring `TRUSTED_PROXIES` from the app state.
pub fn of(req: &HttpRequest) -> IpAddr {
    let trusted = req
        .app_data::<actix_web::web::Data<super::AppState>>()
        .map(|state| state.config.security.trusted_proxies.as_slice())
        .unwrap_or_default();
    resolve(
        req.peer_addr().map(|addr| addr.ip()),
        req.headers(),
        trusted,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(xff: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_str(xff).unwrap(),
        );
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_cannot_claim_another_address() {
        let got = resolve(Some(ip("203.0.113.9")), &headers("1.2.3.4"), &[]);
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn trusted_proxy_chain_yields_the_nearest_untrusted_hop() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let got = resolve(
            Some(ip("10.0.0.2")),
            &headers("6.6.6.6, 198.51.100.7, 10.0.0.5"),
            &trusted,
        );
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn garbage_in_the_header_stops_the_walk() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let got = resolve(Some(ip("10.0.0.2")), &headers("1.1.1.1, junk"), &trusted);
        assert_eq!(got, ip("10.0.0.2"));
    }
}
