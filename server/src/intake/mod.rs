//! Taking a request's events the rest of the way, with no HTTP types: decode
//! and validate, drop resends, then (gathered with other requests into a
//! micro-batch, see [`gather`]) run the plugin chain, append to the
//! write-ahead log, buffer, and (`wait`) wait for storage. The ingest route
//! translates HTTP into a call here and the answer back; benches and tests
//! can call it directly.

mod gather;
mod recent;
mod segment;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::batch::Batcher;
use crate::config::IngestConfig;
use crate::ingest::{self, BodyFormat, DecodeError, Rejection, ResendKey};
use crate::model::Table;
use crate::plugins::Plugins;
use crate::telemetry;
use crate::wal::{Recovered, Wal};

/// What became of a request's events.
#[derive(Debug, Default, Serialize)]
pub struct Receipt {
    pub accepted: usize,
    pub rejected: usize,
    /// Events whose id was seen within the deduplication window: dropped.
    pub duplicates: usize,
    /// Dropped by a plugin's verdict (a bot, say): counted, not stored.
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped: usize,
    /// Held in `plugin_quarantine`: a fail-closed plugin could not judge them.
    #[serde(skip_serializing_if = "is_zero")]
    pub quarantined: usize,
    /// With `wait`: the accepted rows are in storage, not only in the log.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stored: bool,
    /// One entry per rejected event: its index in the request and why.
    pub errors: Vec<Rejection>,
    /// Of the rejected, those refused because their organizer is
    /// suspended: when they are all there is, the answer is a 403.
    #[serde(skip)]
    pub suspended: usize,
}

impl Receipt {
    /// Events taken one way or another: stored, already had, dropped or
    /// quarantined by a plugin; not rejected.
    pub fn taken(&self) -> usize {
        self.accepted + self.duplicates + self.dropped + self.quarantined
    }

    /// Adds another part of the same request (its indexes already the request's).
    pub fn add(&mut self, part: Receipt) {
        let earlier_rows = self.accepted > 0;
        self.accepted += part.accepted;
        self.rejected += part.rejected;
        self.duplicates += part.duplicates;
        self.dropped += part.dropped;
        self.quarantined += part.quarantined;
        self.suspended += part.suspended;
        // Stored: every part that had rows had them stored.
        if part.accepted > 0 {
            self.stored = part.stored && (self.stored || !earlier_rows);
        }
        self.errors.extend(part.errors);
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Why an event of a suspended organizer is refused.
fn suspended_reason(organizer: &str) -> String {
    format!(
        "organizer_id: organizer {organizer:?} is suspended: its events are refused until it is \
         resumed (what it stored is kept)"
    )
}

/// Why nothing of a request was taken.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IntakeError {
    /// The body is not events: malformed, empty, too many.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Full right now (the log is at its cap): send it again later.
    #[error("{0}")]
    Overloaded(String),
    /// The log could not take it.
    #[error("{0}")]
    Unavailable(String),
}

/// Who sent a request, as far as its events are concerned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sender<'a> {
    /// The organizers its key may write for; `None`: any.
    pub scope: Option<&'a [String]>,
    /// A browser's user agent and address, for events without their own.
    pub stamp: Option<&'a ingest::Stamp>,
}

pub struct Intake {
    /// Organizers made through the API: a suspended one's events are refused.
    tenants: Option<Arc<crate::tenants::Tenants>>,
    max_events: usize,
    wait_timeout: Duration,
    /// Events accepted within `ingest.dedup_window`, to drop resends.
    recent: recent::Recent,
    batcher: Arc<Batcher>,
    /// One per table of [`Table::INGEST`], in that order.
    gatherers: Vec<mpsc::UnboundedSender<gather::Job>>,
    /// Each event's country from its address, before the plugins.
    countries: Option<Arc<crate::geo::Countries>>,
    /// Each page view's and event's visit and its origin, before the plugins.
    visits: Arc<crate::visits::Visits>,
    /// The log and the buffers, for rows no chain judges (engagements).
    pipeline: Arc<gather::Pipeline>,
    /// Held while visits are written: one write at a time.
    visits_writing: tokio::sync::Mutex<()>,
}

impl Intake {
    pub fn new(
        cfg: &IngestConfig,
        plugins: Arc<Plugins>,
        wal: Option<Arc<Wal>>,
        batcher: Arc<Batcher>,
        countries: Option<Arc<crate::geo::Countries>>,
        visits: Arc<crate::visits::Visits>,
    ) -> Intake {
        let recent = recent::Recent::new(cfg.dedup_window, cfg.dedup_capacity);
        let pipeline = Arc::new(gather::Pipeline {
            plugins,
            wal,
            batcher: batcher.clone(),
            max_events: cfg.max_events_per_request,
            visits: visits.clone(),
        });
        Intake {
            max_events: cfg.max_events_per_request,
            wait_timeout: cfg.wait_timeout,
            recent,
            batcher,
            gatherers: Table::INGEST
                .iter()
                .map(|t| gather::start(*t, pipeline.clone()))
                .collect(),
            countries,
            visits,
            pipeline,
            visits_writing: tokio::sync::Mutex::new(()),
            tenants: None,
        }
    }

    /// Refuses the events of organizers suspended through the API.
    pub fn with_tenants(mut self, tenants: Arc<crate::tenants::Tenants>) -> Intake {
        self.tenants = Some(tenants);
        self
    }

    /// A client whose 202 was lost in a crash will resend: what the log
    /// already holds counts as seen, so the resend is dropped.
    pub fn remember(&self, recovered: &Recovered) {
        // Rows of the tables clients write; a quarantined or rejected event
        // is not "accepted" as sent.
        for (table, rows) in recovered
            .logged
            .iter()
            .filter(|(t, _)| Table::INGEST.contains(t) || *t == Table::PageEngagements)
        {
            ingest::resend_keys(*table, rows).for_each(|k| {
                self.recent.claim(k);
            });
        }
    }

    /// Writes the visits that changed since they were last written, and
    /// closes those `closing` says (see [`crate::visits::tally`]); how many
    /// rows. When the log refuses them, they stay due. One write at a time,
    /// in a task of its own: a caller that goes away (a flush whose client
    /// hung up, the timer stopped) cannot cut a write between marking lines
    /// written and storing them.
    pub async fn write_visits(
        self: &Arc<Self>,
        closing: crate::visits::Closing,
    ) -> Result<usize, IntakeError> {
        let this = self.clone();
        tokio::spawn(async move {
            let _one = this.visits_writing.lock().await;
            let now = chrono::Utc::now().timestamp_millis();
            let mut due = this.visits.tallies().due(now, closing);
            let rows = due.rows;
            let stored = match rows {
                0 => Ok(()),
                _ => {
                    let lines = bytes::Bytes::from(std::mem::take(&mut due.lines));
                    this.pipeline.store(Table::Visits, lines, rows).await
                }
            };
            this.visits.tallies().settle(due, stored.is_ok());
            stored.map(|()| rows)
        })
        .await
        .unwrap_or_else(|e| Err(IntakeError::Unavailable(format!("writing visits: {e}"))))
    }

    /// Writes again the visits of this server's earlier runs a crash left
    /// behind, and closes those it left open (see [`crate::visits::recover`]);
    /// how many rows. `started`: when this run started.
    pub async fn recover_visits(
        &self,
        storage: &dyn crate::storage::Storage,
        started: chrono::DateTime<chrono::Utc>,
        slack: Duration,
    ) -> Result<usize, IntakeError> {
        let (lines, n) = crate::visits::recover::lost(storage, self.visits.tag(), started, slack)
            .await
            .map_err(|e| IntakeError::Unavailable(format!("visits could not be read: {e}")))?;
        if n > 0 {
            self.pipeline.store(Table::Visits, lines, n).await?;
        }
        Ok(n)
    }

    /// The visits the host follows, and their users' touches.
    pub fn visits(&self) -> &crate::visits::Visits {
        &self.visits
    }

    /// Takes a request's events: `sender.scope` is the organizers its key
    /// may write for (`None`: any); with `wait`, answers once storage has the
    /// rows or `ingest.wait_timeout` has passed.
    pub async fn accept(
        &self,
        table: Table,
        body: &[u8],
        format: BodyFormat,
        sender: Sender<'_>,
        wait: bool,
    ) -> Result<Receipt, IntakeError> {
        let now = chrono::Utc::now();
        let mut parsed = ingest::parse(table, body, format, self.max_events, now, sender.scope)?;
        let suspended = match &self.tenants {
            Some(tenants) => {
                let directory = tenants.directory();
                parsed.refuse(|row| {
                    directory
                        .suspended(row.organizer_id())
                        .then(|| ("organizer_id", suspended_reason(row.organizer_id())))
                })
            }
            None => 0,
        };
        if let Some(stamp) = sender.stamp {
            parsed.rows.iter_mut().for_each(|(_, row)| row.stamp(stamp));
        }
        // Before the plugins: the privacy plugin truncates the address.
        if let Some(countries) = &self.countries {
            countries.fill(parsed.rows.iter_mut().map(|(_, row)| row));
        }
        self.visits.fill(
            parsed.rows.iter_mut().map(|(_, row)| row),
            now.timestamp_millis(),
        );
        let events = parsed.rows.len() + parsed.rejections.len();
        // An id seen within the window (in this request or an earlier one) is
        // a resend: drop it. Claimed atomically, so two racing resends keep one.
        // What this request claimed is released if it is refused, so that the
        // retry is not taken for a resend (quarantined events included).
        let mut claimed = Vec::with_capacity(parsed.rows.len());
        let duplicates = parsed.retain(|row| {
            let key = ResendKey::of(table, row);
            let fresh = self.recent.claim(key);
            if fresh {
                claimed.push(key);
            }
            fresh
        });
        let mut receipt = Receipt {
            accepted: 0,
            rejected: 0,
            duplicates,
            dropped: 0,
            quarantined: 0,
            stored: false,
            errors: parsed.rejections,
            suspended,
        };
        if !parsed.rows.is_empty() {
            let forget = |keys: &mut dyn Iterator<Item = &ResendKey>| {
                keys.for_each(|k| self.recent.release(k))
            };
            let (tx, stored) = match wait {
                true => {
                    let (tx, rx) = oneshot::channel();
                    (Some(tx), Some(rx))
                }
                false => (None, None),
            };
            let (reply, part) = oneshot::channel();
            let job = gather::Job {
                rows: parsed.rows,
                events,
                waiter: tx,
                reply,
            };
            let gatherer = &self.gatherers[Table::INGEST
                .iter()
                .position(|t| *t == table)
                .expect("clients write only to ingest tables")];
            let part = match gatherer.send(job) {
                // No answer: the micro-batch's task ended without one (the
                // server is stopping, or a bug).
                Ok(()) => part.await.unwrap_or_else(|_| {
                    Err(IntakeError::Unavailable(
                        "ingest could not finish this request; nothing of it was kept, retry"
                            .into(),
                    ))
                }),
                Err(_) => Err(IntakeError::Unavailable("ingest is shutting down".into())),
            };
            let part = match part {
                Ok(part) => part,
                Err(e) => {
                    forget(&mut claimed.iter());
                    return Err(e);
                }
            };
            // A rejected event may come back corrected under the same id.
            forget(&mut claimed.iter().filter(|k| part.rejected_ids.contains(&k.id)));
            receipt.accepted = part.accepted;
            receipt.dropped = part.dropped;
            receipt.quarantined = part.quarantined;
            receipt.errors.extend(part.rejections);
            if let (Some(rx), true) = (stored, part.accepted > 0) {
                self.batcher.seal_for_waiter(table);
                // Past the timeout the answer is the usual one: the rows are
                // durable in the log and will be stored; only the
                // confirmation is not waited for.
                receipt.stored = matches!(
                    tokio::time::timeout(self.wait_timeout, rx).await,
                    Ok(Ok(()))
                );
            }
        }
        receipt.rejected = receipt.errors.len();
        receipt.errors.sort_by_key(|r| r.index);
        record(table, &receipt);
        Ok(receipt)
    }
}

impl Intake {
    /// Takes a request's engagements ([`ingest::engagement`]): checked,
    /// given their view's visit, logged and buffered for
    /// `page_engagements`. No plugin runs. An id seen within the
    /// deduplication window is a resend (a client retrying after a lost
    /// answer; the tracker gives each engagement its id): dropped, or the
    /// view's time would count twice.
    pub async fn engagements(
        &self,
        body: &[u8],
        format: BodyFormat,
        sender: Sender<'_>,
    ) -> Result<Receipt, IntakeError> {
        let now = chrono::Utc::now();
        let (mut rows, mut errors) =
            ingest::engagement::parse(body, format, self.max_events, now, sender.scope)?;
        let mut suspended = 0;
        if let Some(tenants) = &self.tenants {
            let directory = tenants.directory();
            rows.retain(|(index, e)| {
                let refused = directory.suspended(&e.organizer_id);
                if refused {
                    suspended += 1;
                    errors.push(Rejection {
                        index: *index,
                        field: Some("organizer_id".into()),
                        reason: suspended_reason(&e.organizer_id),
                        code: None,
                        plugin: None,
                    });
                }
                !refused
            });
            errors.sort_by_key(|r| r.index);
        }
        let (sent, mut claimed) = (rows.len(), Vec::with_capacity(rows.len()));
        rows.retain(|(_, e)| {
            let key = ResendKey::new(Table::PageEngagements, &e.organizer_id, e.id);
            let fresh = self.recent.claim(key);
            if fresh {
                claimed.push(key);
            }
            fresh
        });
        let duplicates = sent - rows.len();
        let (ip, user_agent) = sender
            .stamp
            .map_or(("", ""), |s| (s.ip.as_str(), s.user_agent.as_str()));
        let mut lines = Vec::with_capacity(rows.len() * 192);
        for (_, e) in &mut rows {
            self.visits
                .engaged(e, ip, user_agent, now.timestamp_millis());
            e.write(&mut lines);
        }
        if !rows.is_empty() {
            let stored = self
                .pipeline
                .store(
                    Table::PageEngagements,
                    bytes::Bytes::from(lines),
                    rows.len(),
                )
                .await;
            if let Err(e) = stored {
                // Not kept: the retry is no resend.
                claimed.iter().for_each(|k| self.recent.release(k));
                return Err(e);
            }
            for (_, e) in &rows {
                self.visits.engagement_stored(e, now.timestamp_millis());
            }
        }
        let receipt = Receipt {
            accepted: rows.len(),
            rejected: errors.len(),
            duplicates,
            errors,
            suspended,
            ..Receipt::default()
        };
        record(Table::PageEngagements, &receipt);
        Ok(receipt)
    }
}

/// Counts per request, from the receipt: never per event.
fn record(table: Table, r: &Receipt) {
    let events = |outcome: &'static str, n: usize| {
        metrics::counter!(telemetry::INGEST_EVENTS, "table" => table.name(), "outcome" => outcome)
            .increment(n as u64)
    };
    events("accepted", r.accepted);
    events("rejected", r.rejected);
    events("duplicate", r.duplicates);
    events("dropped", r.dropped);
    events("quarantined", r.quarantined);
    let mut by_field: Vec<(&'static str, u64)> = Vec::new();
    for e in &r.errors {
        let field = telemetry::field_label(e.field.as_deref());
        match by_field.iter_mut().find(|(f, _)| *f == field) {
            Some((_, n)) => *n += 1,
            None => by_field.push((field, 1)),
        }
    }
    for (field, n) in by_field {
        metrics::counter!(telemetry::INGEST_REJECTIONS, "table" => table.name(), "field" => field)
            .increment(n);
    }
}
