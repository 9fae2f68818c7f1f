//! The Redis the shared-limit tests use: `TEST_REDIS_URL` (default redis://127.0.0.1:6379).
//! Each test namespaces its keys with a prefix of its own, so tests running side by side (and
//! earlier runs) never share a budget.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::sync::OnceLock;
use std::time::Duration;

use tollgate::config::{RedisFail, RedisSettings};

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Does `host:port` answer PING with PONG?
pub fn redis_answers(address: &str) -> bool {
    let Some(socket) = address.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&socket, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// Is the test Redis there? (Says so loudly, once, when it is not; panics under
/// REQUIRE_REDIS=1.)
pub fn redis_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let url = redis_url();
        let address = url
            .trim_start_matches("redis://")
            .split('/')
            .next()
            .unwrap_or_default()
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_owned();
        let address = if address.contains(':') {
            address
        } else {
            format!("{address}:6379")
        };
        if redis_answers(&address) {
            return true;
        }
        if std::env::var("REQUIRE_REDIS").as_deref() == Ok("1") {
            panic!("REQUIRE_REDIS=1 but Redis does not answer at {address}");
        }
        eprintln!(
            "\n!!!!! Redis does NOT answer at {address}.\n\
             !!!!! SKIPPING the shared-limit tests. Set REQUIRE_REDIS=1 to fail instead.\n"
        );
        false
    })
}

/// Settings for `url` under a prefix no other test uses.
pub fn redis_settings(url: &str, fail: RedisFail) -> RedisSettings {
    let mut unique = [0u8; 8];
    getrandom::fill(&mut unique).unwrap();
    let unique = u64::from_le_bytes(unique);
    RedisSettings {
        url: secrecy::SecretString::from(url.to_owned()),
        fail,
        // Tests share two cores with argon2: a slow answer must not pass for an outage.
        timeout: std::time::Duration::from_secs(5),
        prefix: format!("tollgate-test-{unique:016x}"),
    }
}
