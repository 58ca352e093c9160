//! Segment's messages the rest of the way: translated into events
//! (`ingest::segment`), each table's share taken by [`Intake::accept`], and
//! one receipt whose indexes are the request's messages.

use super::{Intake, IntakeError, Receipt, Sender};
use crate::ingest::BodyFormat;
use crate::ingest::segment::{self, Call};

impl Intake {
    /// A Segment call's body: every message an event or a rejection, in
    /// one receipt. A key bound to one organizer puts every message under
    /// it (Segment's messages carry none of ours).
    pub async fn accept_segment(
        &self,
        call: Call,
        body: &[u8],
        sender: Sender<'_>,
        wait: bool,
    ) -> Result<Receipt, IntakeError> {
        let organizer = match sender.scope {
            Some([one]) => Some(one.as_str()),
            _ => None,
        };
        let translated =
            segment::translate(call, body, self.max_events, organizer, chrono::Utc::now())?;
        let mut total = Receipt::default();
        for (table, items) in translated.tables() {
            if items.is_empty() {
                continue;
            }
            let events: Vec<_> = items.iter().map(|(_, event)| event).collect();
            let json = serde_json::to_vec(&events).expect("JSON values serialize");
            let mut part = self
                .accept(table, &json, BodyFormat::Json, sender, wait)
                .await?;
            // Indexes in the request, not in this table's share of it.
            for e in &mut part.errors {
                e.index = items[e.index].0;
            }
            total.add(part);
        }
        total.errors.extend(translated.rejections);
        total.errors.sort_by_key(|e| e.index);
        total.rejected = total.errors.len();
        Ok(total)
    }
}
