//! bcrypt hashing and verification, run on tokio's blocking pool so a 250 ms hash never stalls an
//! async worker thread. Verification of an unknown account runs against a dummy hash of the same
//! cost, so "no such user" and "wrong password" take the same time.
//!
//! bcrypt reads at most 72 bytes. `domain::Password` refuses longer passwords, so hashing never
//! truncates; verification refuses (as a mismatch, after the same work) anything longer than 72
//! bytes, so a long password can never match on its first 72 bytes.

use domain::Password;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("bcrypt failed: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
    #[error("blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("hasher closed")]
    Closed,
}

#[derive(Clone, Debug)]
pub struct PasswordHasher {
    cost: u32,
    dummy_hash: String,
    /// At most one hash per core at a time. Without it, 64 concurrent logins start 64 blocking
    /// threads that share the cores and all finish together seconds later, starving the event
    /// loop meanwhile; with it they queue and complete one after another at the machine's rate.
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    /// bcrypt runs started by this hasher (and its clones): hashes and verifies, dummy included.
    runs: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl PasswordHasher {
    /// Builds a hasher; computes the dummy hash once (one bcrypt run at start-up).
    pub fn new(cost: u32) -> Result<Self, HashError> {
        let dummy_hash = bcrypt::hash("dummy password for timing equalisation", cost)?;
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Ok(Self {
            cost,
            dummy_hash,
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(cores)),
            runs: std::sync::Arc::default(),
        })
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// How many bcrypt runs (hashes and verifies, dummy verifies included) this hasher and its
    /// clones have started: the expensive work a caller made the process do.
    pub fn runs(&self) -> u64 {
        self.runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, HashError> {
        let permit = self.permits.acquire().await.map_err(|_| HashError::Closed)?;
        self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(permit)
    }

    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let pw = password.expose().to_owned();
        let cost = self.cost;
        let _permit = self.permit().await?;
        Ok(tokio::task::spawn_blocking(move || bcrypt::hash(pw, cost)).await??)
    }

    /// Verifies `password` against `hash`, or against the dummy hash when `hash` is `None`
    /// (unknown account) — in which case the result is always `false`. A password over 72 bytes
    /// never matches.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, HashError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or(&self.dummy_hash).to_owned();
        let pw = password.to_owned();
        let fits = pw.len() <= domain::password::MAX_BYTES;
        let _permit = self.permit().await?;
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(pw, &hash).unwrap_or(false)).await?;
        Ok(ok && known && fits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let h = PasswordHasher::new(4).unwrap();
        let pw = Password::parse("correct horse battery".into(), "password").unwrap();
        let hash = h.hash(&pw).await.unwrap();
        assert!(hash.starts_with("$2b$04$"));
        assert!(h.verify("correct horse battery", Some(&hash)).await.unwrap());
        assert!(!h.verify("wrong horse battery", Some(&hash)).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_account_never_verifies() {
        let h = PasswordHasher::new(4).unwrap();
        assert!(!h.verify("dummy password for timing equalisation", None).await.unwrap());
    }

    #[tokio::test]
    async fn counts_every_bcrypt_run_across_clones() {
        let h = PasswordHasher::new(4).unwrap();
        let pw = Password::parse("correct horse battery".into(), "password").unwrap();
        let hash = h.clone().hash(&pw).await.unwrap();
        h.verify("wrong", Some(&hash)).await.unwrap();
        h.verify("wrong", None).await.unwrap();
        assert_eq!(h.runs(), 3);
    }

    #[tokio::test]
    async fn hashing_does_not_block_the_async_thread() {
        // On a current-thread runtime, a ticker can only advance while the hash runs if the hash
        // is off this thread (on the blocking pool).
        let h = PasswordHasher::new(10).unwrap();
        let pw = Password::parse("correct horse battery".into(), "password").unwrap();
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let t = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                t.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        h.hash(&pw).await.unwrap();
        ticker.abort();
        assert!(ticks.load(std::sync::atomic::Ordering::Relaxed) > 0);
    }

    #[tokio::test]
    async fn long_password_is_not_truncated() {
        let h = PasswordHasher::new(4).unwrap();
        let pw72 = "a".repeat(72);
        let hash = h
            .hash(&Password::parse(pw72.clone(), "password").unwrap())
            .await
            .unwrap();
        // The same 72 bytes plus more must not match (plain bcrypt would truncate and accept it).
        assert!(!h.verify(&format!("{pw72}extra"), Some(&hash)).await.unwrap());
    }
}
