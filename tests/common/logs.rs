//! Captured logs: everything the application logs (debug and up) during the test run, so tests
//! can prove that a secret never reaches a log line.

static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogCapture;

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                "debug,h2=info,hyper=info,hyper_util=info,reqwest=info,actix_server=info",
            )
            .with_ansi(false)
            .with_writer(|| LogCapture)
            .try_init();
    });
}

/// Everything logged so far by every app in this test process.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}
