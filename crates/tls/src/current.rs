//! The certificate currently served, replaceable while listeners run.
//!
//! Every rustls configuration built from [`crate::Certs::Live`] asks this
//! resolver on each handshake, so a [`CurrentCert::replace`] reaches all
//! listeners at once; connections already established keep the certificate
//! they started with.

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A resolver that serves one certificate for every name, replaceable at
/// run time.
pub struct CurrentCert {
    cert: RwLock<Arc<CertifiedKey>>,
}

impl CurrentCert {
    /// Starts with `cert`.
    pub fn new(cert: Arc<CertifiedKey>) -> Self {
        Self {
            cert: RwLock::new(cert),
        }
    }

    /// The certificate new handshakes get.
    pub fn get(&self) -> Arc<CertifiedKey> {
        // A poisoned lock still holds a complete `Arc`: keep serving it.
        match self.cert.read() {
            Ok(cert) => cert.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Serves `cert` from the next handshake on.
    pub fn replace(&self, cert: Arc<CertifiedKey>) {
        match self.cert.write() {
            Ok(mut slot) => *slot = cert,
            Err(poisoned) => *poisoned.into_inner() = cert,
        }
    }
}

impl fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurrentCert").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}
