//! ListActivity and GetEvent: one page of a user's history, one event.
//!
//! The hot part of each (one statement) runs in a task of its own on a
//! pooled connection: if the deadline drops the call, the statement still
//! finishes and its connection goes back to the pool idle, never with a
//! query in flight. The connection is back in the pool before any archive
//! read, which takes a permit ([`HistoryService::cold_permit`]) first.

use strata_proto::v1::{
    Event as ProtoEvent, GetEventRequest, ListActivityRequest, ListActivityResponse,
};

use super::HistoryService;
use crate::admission::Call;
use crate::audit;
use crate::convert::to_proto;
use crate::error::{ApiError, NotFound};
use crate::history::{Lookup, Query, ReadAhead};
use crate::page_token::Binding;
use crate::request;

impl HistoryService {
    pub(super) async fn list(
        &self,
        call: &Call,
        request: ListActivityRequest,
    ) -> Result<ListActivityResponse, ApiError> {
        let (from_micros, to_micros) =
            request::range(request.start_time.as_ref(), request.end_time.as_ref())?;
        let kinds = request::kinds(&request.kinds)?;
        let limit = request::page_size(request.page_size)?;
        let descending = request::descending(request.order)?;
        let binding = Binding {
            method: "ListActivity",
            user_id: &call.target,
            kinds: &kinds,
            from_micros,
            to_micros,
            descending,
        };
        let now = chrono::Utc::now().timestamp();
        let after = if request.page_token.is_empty() {
            None
        } else {
            let cursor = self
                .parts
                .tokens
                .verify(&request.page_token, &binding, now)
                .map_err(request::page_token)?;
            Some(cursor)
        };
        let query = Query {
            user_id: call.target.clone(),
            from_micros,
            to_micros,
            kinds: kinds.clone(),
            descending,
            after,
            limit,
        };
        let read = async {
            let (pool, reader, hot_query) = (
                self.parts.pool.clone(),
                self.parts.reader.clone(),
                query.clone(),
            );
            let hot_page = tokio::spawn(async move {
                let mut client = pool.get().await?;
                Ok::<_, ApiError>(reader.hot_part(&mut client, &hot_query).await?)
            })
            .await
            .map_err(|e| ApiError::internal("read the hot store", e))??;
            let _permit = if hot_page.needs_archive(&query) {
                Some(self.cold_permit(call)?)
            } else {
                None
            };
            Ok::<_, ApiError>(
                self.parts
                    .reader
                    .cold_part(hot_page, &query, &mut ReadAhead::none())
                    .await?,
            )
        };
        let page = audit::alongside(&self.parts.pool, call, read).await?;
        let expires = now + self.parts.settings.page_token_ttl.as_secs() as i64;
        let next_page_token = page
            .next
            .map(|cursor| self.parts.tokens.issue(&cursor, &binding, expires))
            .unwrap_or_default();
        Ok(ListActivityResponse {
            events: page.events.iter().map(to_proto).collect(),
            next_page_token,
        })
    }

    pub(super) async fn get_event_inner(
        &self,
        call: &Call,
        request: &GetEventRequest,
    ) -> Result<ProtoEvent, ApiError> {
        let event_id = request::event_id(&request.event_id)?;
        let (pool, reader, target) = (
            self.parts.pool.clone(),
            self.parts.reader.clone(),
            call.target.clone(),
        );
        let lookup = tokio::spawn(async move {
            let mut client = pool.get().await?;
            Ok::<_, ApiError>(reader.find_hot(&mut client, &target, event_id).await?)
        })
        .await
        .map_err(|e| ApiError::internal("read the hot store", e))??;
        let max_days = self.parts.settings.get_event_max_days;
        let found = match lookup {
            Lookup::Found(event) => Some(event),
            Lookup::Archive(files) if files.is_empty() => None,
            Lookup::Archive(files) => {
                let _permit = self.cold_permit(call)?;
                self.parts
                    .reader
                    .find_cold(files, &call.target, event_id, max_days)
                    .await?
            }
        };
        found
            .map(|e| to_proto(&e))
            .ok_or(ApiError::NotFound(NotFound::Event { max_days }))
    }
}
