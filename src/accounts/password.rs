//! Passwords: the length policy, argon2id hashing, verification that costs the same
//! whether or not the account exists, and [`PasswordWork`], the gate every hash and
//! verification served over HTTP goes through (each holds 19 MiB: they must not pile up).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret as _, SecretString};

pub const MIN_LEN: usize = 12;
pub const MAX_LEN: usize = 128;

/// A candidate password that meets the policy. Redacted in `Debug`.
#[derive(Debug)]
pub struct NewPassword(SecretString);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordPolicyError {
    #[error("use at least {MIN_LEN} characters")]
    TooShort,
    #[error("use at most {MAX_LEN} characters")]
    TooLong,
}

impl NewPassword {
    pub fn parse(raw: SecretString) -> Result<Self, PasswordPolicyError> {
        let len = raw.expose_secret().chars().count();
        if len < MIN_LEN {
            return Err(PasswordPolicyError::TooShort);
        }
        if len > MAX_LEN {
            return Err(PasswordPolicyError::TooLong);
        }
        Ok(Self(raw))
    }

    /// argon2id (OWASP parameters), PHC string with a random salt.
    pub fn hash(&self) -> Result<String, HashError> {
        let salt_bytes = crate::secret::random_bytes::<16>().map_err(|_| HashError)?;
        let salt = SaltString::encode_b64(&salt_bytes).map_err(|_| HashError)?;
        let hash = hasher()
            .hash_password(self.0.expose_secret().as_bytes(), &salt)
            .map_err(|_| HashError)?;
        Ok(hash.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed")]
pub struct HashError;

fn hasher() -> Argon2<'static> {
    // argon2id, 19 MiB, 2 passes, 1 lane: OWASP's recommended minimum.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A hash of a random password, verified against when the account does not exist so that
/// an unknown email takes the same time as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random = crate::secret::random_bytes::<24>().unwrap_or([7; 24]);
        NewPassword(SecretString::from(crate::secret::encode_token(&random)))
            .hash()
            .unwrap_or_default()
    })
}

/// Checks `candidate` against `stored` (or against a dummy hash when there is no account).
/// Always does one full argon2 verification. Comparison inside is constant-time.
pub fn verify(candidate: &SecretString, stored: Option<&str>) -> bool {
    let matched = verify_against(candidate, stored.unwrap_or_else(|| dummy_hash()));
    matched && stored.is_some()
}

fn verify_against(candidate: &SecretString, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    hasher()
        .verify_password(candidate.expose_secret().as_bytes(), &parsed)
        .is_ok()
}

/// Why password work did not run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkError {
    /// Every slot stayed taken for the whole wait.
    #[error("too many password hashes in progress")]
    Busy,
    #[error("the blocking thread pool failed")]
    Blocking,
}

/// At most `max_concurrent` argon2 computations at once, off the executor. A request over the
/// cap waits up to `max_wait` for a slot, then gets [`WorkError::Busy`].
pub struct PasswordWork {
    slots: Arc<tokio::sync::Semaphore>,
    max_wait: Duration,
}

impl PasswordWork {
    pub fn new(max_concurrent: u32, max_wait: Duration) -> Self {
        let permits = usize::try_from(max_concurrent).unwrap_or(1).max(1);
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(permits)),
            max_wait,
        }
    }

    /// Takes a slot, waiting at most `max_wait`. Held until the permit is dropped.
    pub async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, WorkError> {
        let slots = Arc::clone(&self.slots);
        if self.max_wait.is_zero() {
            return slots.try_acquire_owned().map_err(|_| WorkError::Busy);
        }
        match actix_web::rt::time::timeout(self.max_wait, slots.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // Timed out, or the semaphore was closed (never done): both mean no slot.
            Ok(Err(_)) | Err(_) => Err(WorkError::Busy),
        }
    }

    /// Runs `work` on the blocking pool once a slot is free. The slot travels with the work,
    /// so it is released when the computation ends, even if the request was abandoned.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, WorkError> {
        let slot = self.slot().await?;
        actix_web::web::block(move || {
            let result = work();
            drop(slot);
            result
        })
        .await
        .map_err(|_| WorkError::Blocking)
    }

    /// Free slots right now (for tests and diagnostics).
    pub fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }
}

/// Warms the dummy hash at start-up so the first failed sign-in is not measurably faster.
pub fn prepare() {
    let _ = dummy_hash();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn enforces_length_in_characters() {
        assert_eq!(
            NewPassword::parse(secret("short")).unwrap_err(),
            PasswordPolicyError::TooShort
        );
        assert!(NewPassword::parse(secret("twelve chars")).is_ok());
        assert!(NewPassword::parse(secret(&"é".repeat(128))).is_ok());
        assert_eq!(
            NewPassword::parse(secret(&"a".repeat(129))).unwrap_err(),
            PasswordPolicyError::TooLong
        );
    }

    #[actix_web::test]
    async fn password_work_never_runs_more_than_its_cap_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let work = Arc::new(PasswordWork::new(2, Duration::from_secs(60)));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs = (0..12).map(|_| {
            let (work, running, most) = (work.clone(), running.clone(), most.clone());
            async move {
                work.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }
        });
        let results = futures_util::future::join_all(jobs).await;
        assert!(results.iter().all(Result::is_ok), "they waited their turn");
        assert!(most.load(Ordering::SeqCst) <= 2, "never more than the cap");
        assert_eq!(work.free_slots(), 2, "every slot came back");
    }

    #[actix_web::test]
    async fn password_work_over_the_cap_is_refused_after_the_wait() {
        let work = PasswordWork::new(1, Duration::from_millis(20));
        let held = work.slot().await.unwrap();
        assert_eq!(work.run(|| ()).await, Err(WorkError::Busy));
        let immediate = PasswordWork::new(1, Duration::ZERO);
        let _held_too = immediate.slot().await.unwrap();
        assert_eq!(immediate.run(|| ()).await, Err(WorkError::Busy));
        drop(held);
        assert_eq!(work.run(|| 7).await, Ok(7));
    }

    #[test]
    fn hashes_with_argon2id_and_verifies() {
        let password = NewPassword::parse(secret("correct horse battery")).unwrap();
        let hash = password.hash().unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify(&secret("correct horse battery"), Some(&hash)));
        assert!(!verify(&secret("wrong horse battery"), Some(&hash)));
        assert!(!verify(&secret("correct horse battery"), None));
    }
}
