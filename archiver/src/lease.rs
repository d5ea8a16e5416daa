//! The lease's life cycle: take it ([`Archiver::start`]), keep it alive
//! from a connection of its own ([`LeaseKeeper`]), stop work when it is
//! lost, and give it up. [`LeasedArchiver`] is that whole cycle in one
//! value, used by the continuous archiver and by `strata archive`.
//!
//! Fencing at commit is what makes a lost lease safe; the keeper only
//! saves work.

use std::ops::{Deref, DerefMut};
use std::time::Instant;

use strata_core::config::{ArchiverConfig, DatabaseUrl};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::archive::{Archiver, ArchiverOptions};
use crate::catalog::{self, Lease};
use crate::error::ArchiveError;
use crate::metrics;
use crate::pg::connect;

/// The task renewing an archiver's lease.
pub struct LeaseKeeper {
    /// Fires when the lease is lost.
    pub lost: CancellationToken,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    /// Stops renewing and waits until no renewal is in flight.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

impl Archiver {
    /// Keeps the lease alive from its own connection until the keeper is
    /// stopped; its `lost` token fires when the lease is lost (taken over,
    /// or not renewed within its ttl), so in-flight work stops early.
    pub fn keep_lease(&self) -> LeaseKeeper {
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let task = tokio::spawn(renew_until_stopped(
            self.lease.clone(),
            self.options.hot_store.clone(),
            self.options.archiver.clone(),
            lost.clone(),
            stop.clone(),
        ));
        LeaseKeeper { lost, stop, task }
    }

    /// Gives the lease up (stop its keeper first, or a renewal in flight
    /// could outlive the release).
    pub async fn release(self) {
        catalog::release_lease(
            &self.hot,
            &self.lease,
            self.options.archiver.statement_timeout,
        )
        .await;
        metrics::IS_LEADER.set(0);
    }
}

/// Renews `lease` every third of its ttl until `stop`; cancels `lost` when
/// another archiver took it over, or when no renewal succeeded for a ttl.
async fn renew_until_stopped(
    lease: Lease,
    url: DatabaseUrl,
    config: ArchiverConfig,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let every = config.lease_ttl / 3;
    let mut last_renewed = Instant::now();
    let mut client: Option<Client> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        // A closed connection is replaced; a failed connect is a failed
        // renewal, tried again next time.
        let open = match client.take().filter(|c| !c.is_closed()) {
            Some(open) => Ok(open),
            None => connect(&url, config.statement_timeout).await,
        };
        let result = match open {
            Ok(open) => {
                let renewed =
                    catalog::renew_lease(&open, &lease, config.lease_ttl, config.statement_timeout)
                        .await;
                client = Some(open);
                renewed
            }
            Err(err) => Err(err),
        };
        match result {
            Ok(()) => last_renewed = Instant::now(),
            Err(ArchiveError::Fenced { epoch }) => {
                tracing::warn!(epoch, "archiver lease taken over by another archiver");
                metrics::IS_LEADER.set(0);
                lost.cancel();
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not renew the archiver lease");
                if last_renewed.elapsed() >= config.lease_ttl {
                    metrics::IS_LEADER.set(0);
                    lost.cancel();
                    return;
                }
            }
        }
    }
}

/// An archiver holding the lease, with its keeper running and a work token
/// that fires on shutdown or when the lease is lost. Derefs to the
/// [`Archiver`]; end it with [`LeasedArchiver::release`].
pub struct LeasedArchiver {
    archiver: Archiver,
    keeper: LeaseKeeper,
    work: CancellationToken,
    linked: tokio::task::JoinHandle<()>,
}

impl LeasedArchiver {
    /// Takes the lease ([`ArchiveError::LeaseHeld`] when another archiver
    /// has it) and starts keeping it; work stops on `cancel`.
    pub async fn start(
        options: ArchiverOptions,
        holder: &str,
        cancel: &CancellationToken,
    ) -> Result<Self, ArchiveError> {
        let archiver = Archiver::start(options, holder).await?;
        Ok(Self::keep(archiver, cancel))
    }

    /// Like [`LeasedArchiver::start`], but while another archiver holds the
    /// lease, tries again every sixth of a lease ttl for up to two ttls:
    /// long enough for the lease of a crashed archiver to expire, not for a
    /// live one to stop. `on_held` is told the holder and its expiry at the
    /// first refusal. [`ArchiveError::Cancelled`] on `cancel` meanwhile.
    pub async fn start_waiting(
        options: ArchiverOptions,
        holder: &str,
        cancel: &CancellationToken,
        on_held: impl FnOnce(&str, &str),
    ) -> Result<Self, ArchiveError> {
        let ttl = options.archiver.lease_ttl;
        let deadline = tokio::time::Instant::now() + ttl * 2;
        let mut on_held = Some(on_held);
        loop {
            match Archiver::start(options.clone(), holder).await {
                Ok(archiver) => return Ok(Self::keep(archiver, cancel)),
                Err(ArchiveError::LeaseHeld { holder, until })
                    if tokio::time::Instant::now() < deadline =>
                {
                    if let Some(tell) = on_held.take() {
                        tell(&holder, &until);
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return Err(ArchiveError::Cancelled),
                        _ = tokio::time::sleep(ttl / 6) => {}
                    }
                }
                Err(err) => return Err(err),
            }
        }
    }

    fn keep(archiver: Archiver, cancel: &CancellationToken) -> Self {
        let keeper = archiver.keep_lease();
        let work = CancellationToken::new();
        let linked = {
            let work = work.clone();
            let cancel = cancel.clone();
            let lost = keeper.lost.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = lost.cancelled() => {}
                }
                work.cancel();
            })
        };
        Self {
            archiver,
            keeper,
            work,
            linked,
        }
    }

    /// Fires on shutdown or when the lease is lost: pass it to the work.
    pub fn work(&self) -> &CancellationToken {
        &self.work
    }

    /// Stops the keeper and gives the lease up; a lost lease is not ours
    /// to release, only the leader gauge is cleared.
    pub async fn release(self) {
        let Self {
            archiver,
            keeper,
            linked,
            ..
        } = self;
        let lost = keeper.lost.clone();
        keeper.stop().await;
        linked.abort();
        if lost.is_cancelled() {
            metrics::IS_LEADER.set(0);
            return;
        }
        archiver.release().await;
    }
}

impl Deref for LeasedArchiver {
    type Target = Archiver;

    fn deref(&self) -> &Archiver {
        &self.archiver
    }
}

impl DerefMut for LeasedArchiver {
    fn deref_mut(&mut self) -> &mut Archiver {
        &mut self.archiver
    }
}
