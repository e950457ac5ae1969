//! Paged listings (ListZones, ListImages): page sizes, tokens, and the byte budget that keeps
//! every reply under the message limit whatever the page size.
//!
//! A token names the last item of the page it ends (a zone's creation time and id, an image's
//! record key), so the next page starts after that item wherever it is now: zones created or
//! destroyed in between neither shift nor repeat anything. Tokens are opaque to clients.

use std::ops::ControlFlow;

use tonic::Status;
use uuid::Uuid;

use crate::zones::ZoneKey;

/// The most items a page holds (larger requests are lowered to it).
pub const MAX_PAGE_SIZE: usize = 1000;
/// What a page's items may take, encoded: the message limit less room for the rest of the
/// reply (the token, field tags, lengths).
pub const REPLY_BUDGET: usize = spore_api::MAX_MESSAGE_BYTES - 64 * 1024;

const ZONE_TOKEN: &str = "z1.";
const IMAGE_TOKEN: &str = "i1.";

/// Fills a page: items are offered in order until the page is full, by count or by bytes.
pub struct Page<T> {
    items: Vec<T>,
    limit: usize,
    bytes: usize,
    /// An item was offered that did not fit: there is more.
    more: bool,
}

impl<T: prost::Message> Page<T> {
    /// `page_size` 0: as many as fit the message limit.
    pub fn new(page_size: u32) -> Page<T> {
        let limit = match page_size as usize {
            0 => usize::MAX,
            n => n.min(MAX_PAGE_SIZE),
        };
        Page {
            items: Vec::new(),
            limit,
            bytes: 0,
            more: false,
        }
    }

    /// Called for each further item before it is built: false when the page is full (there
    /// is more than it holds, so the reply gets a token).
    pub fn wants_more(&mut self) -> bool {
        if self.items.len() >= self.limit {
            self.more = true;
        }
        !self.more
    }

    /// Adds `item` if its bytes fit; a page always takes its first item (one item is far below
    /// the limit: request fields are bounded).
    pub fn offer(&mut self, item: T) -> ControlFlow<()> {
        let len = item.encoded_len() + 8;
        if !self.items.is_empty() && self.bytes + len > REPLY_BUDGET {
            self.more = true;
            return ControlFlow::Break(());
        }
        self.bytes += len;
        self.items.push(item);
        ControlFlow::Continue(())
    }

    /// The items, and whether more follow.
    pub fn finish(self) -> (Vec<T>, bool) {
        (self.items, self.more)
    }
}

pub fn zone_token(key: &ZoneKey) -> String {
    format!("{ZONE_TOKEN}{}.{}.{}", key.seconds, key.nanos, key.id)
}

pub fn parse_zone_token(token: &str) -> Result<Option<ZoneKey>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        Status::invalid_argument(
            "page_token: not a ListZones token from this spored (pass next_page_token as it came)",
        )
    };
    let rest = token.strip_prefix(ZONE_TOKEN).ok_or_else(bad)?;
    let mut parts = rest.splitn(3, '.');
    let seconds = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let nanos = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let id = parts
        .next()
        .and_then(|p| Uuid::try_parse(p).ok())
        .ok_or_else(bad)?;
    Ok(Some(ZoneKey { seconds, nanos, id }))
}

pub fn image_token(key: &str) -> String {
    format!("{IMAGE_TOKEN}{key}")
}

pub fn parse_image_token(token: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    match token.strip_prefix(IMAGE_TOKEN) {
        Some(key) if !key.is_empty() && key.len() <= 1024 => Ok(Some(key.to_string())),
        _ => Err(Status::invalid_argument(
            "page_token: not a ListImages token from this spored (pass next_page_token as it came)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use spore_api::v1;

    use super::*;

    #[test]
    fn tokens_round_trip_and_foreign_ones_are_refused() {
        let key = ZoneKey {
            seconds: 1_700_000_000,
            nanos: 5,
            id: Uuid::new_v4(),
        };
        assert_eq!(parse_zone_token(&zone_token(&key)).unwrap(), Some(key));
        assert_eq!(parse_zone_token("").unwrap(), None);
        for bad in [
            "x",
            "z1.",
            "z1.1.2",
            "z1.1.2.not-a-uuid",
            "i1.sha256:00/squashfs",
        ] {
            let err = parse_zone_token(bad).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
        }
        let image = "sha256:00ff/squashfs";
        assert_eq!(
            parse_image_token(&image_token(image)).unwrap().as_deref(),
            Some(image)
        );
        assert!(parse_image_token("z1.1.2.3").is_err());
    }

    #[test]
    fn a_page_stops_at_its_size_or_its_byte_budget() {
        let zone = |n: usize| v1::Zone {
            name: "x".repeat(n),
            ..Default::default()
        };
        let mut page = Page::new(2);
        assert!(page.wants_more() && page.offer(zone(1)).is_continue());
        assert!(page.wants_more() && page.offer(zone(1)).is_continue());
        assert!(!page.wants_more());
        let (items, more) = page.finish();
        assert_eq!((items.len(), more), (2, true));

        // Unlimited by count: big items stop at the budget, and the reply fits the limit.
        let mut page = Page::new(0);
        let mut offered = 0;
        while page.wants_more() && page.offer(zone(100_000)).is_continue() {
            offered += 1;
        }
        let (items, more) = page.finish();
        assert!(more && items.len() <= offered + 1);
        let reply = v1::ListZonesResponse {
            zones: items,
            next_page_token: "z1.1.1.00000000-0000-0000-0000-000000000000".into(),
        };
        assert!(prost::Message::encoded_len(&reply) <= spore_api::MAX_MESSAGE_BYTES);

        // A page of exactly its size with nothing after it has no more.
        let mut page = Page::new(3);
        assert!(page.offer(zone(1)).is_continue());
        let (items, more) = page.finish();
        assert_eq!((items.len(), more), (1, false));
    }
}
