//! The live stream's messages: what the account read model just learned, told to the browsers
//! the moment it learns it (the pages poll only while the stream is down).

use eventstore::change_feed::{ChangeFeed, Changes};
use eventstore::{Aggregate, CheckpointWatch};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::account_store::{Account, LoadError};
use crate::read_side::account_summary::PROJECTION_NAME;
use crate::read_side::{AccountHistory, ReadModel};
use bank::contract::LiveProgress;

/// Follows the account summary's checkpoint — the read model the pages show — and reports the
/// accounts each move changed.
pub fn spawn_account_feed(
    pool: PgPool,
    checkpoints: &CheckpointWatch,
    shutdown: CancellationToken,
) -> (ChangeFeed, JoinHandle<()>) {
    ChangeFeed::spawn(pool, checkpoints, PROJECTION_NAME, Account::STREAM_TYPE, shutdown)
}

/// The most accounts one stream may watch.
pub const MAX_WATCHED: usize = 100;
/// The most accounts a customer's stream may name (an operator's: [`MAX_WATCHED`]); a longer
/// list hears nothing.
pub const MAX_WATCHED_BY_CUSTOMER: usize = 10;

/// What a subscriber watches: every account (the overview, the operations page), or some (an
/// account page). [`Watch::narrowed_for`] decides what a caller may hear of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    Everything,
    Accounts(Vec<Uuid>),
}

impl Watch {
    /// From `?accounts=<id>,<id>,…` (absent: everything).
    pub fn parse(accounts: Option<&str>) -> Result<Watch, String> {
        let Some(accounts) = accounts else {
            return Ok(Watch::Everything);
        };
        let ids = accounts
            .split(',')
            .map(|id| Uuid::parse_str(id.trim()).map_err(|_| format!("accounts: {id:?} is not an account id (a UUID)")))
            .collect::<Result<Vec<_>, _>>()?;
        if ids.len() > MAX_WATCHED {
            return Err(format!("accounts: at most {MAX_WATCHED} accounts a stream"));
        }
        Ok(Watch::Accounts(ids))
    }

    /// This watch narrowed to `owner`'s accounts (`None`: left as it is): "everything" becomes
    /// the accounts they hold now, and others' ids in a list are dropped. Who may hear what is
    /// the API's decision; this is how.
    pub async fn narrowed_to(
        self,
        owner: Option<&str>,
        read_model: &ReadModel,
        history: &AccountHistory,
    ) -> Result<Watch, LoadError> {
        let Some(owner) = owner else {
            return Ok(self);
        };
        match self {
            Watch::Everything => {
                let own = read_model.accounts(Some(owner), None, None).await?;
                Ok(Watch::Accounts(own.accounts.into_iter().map(|account| account.account_id).collect()))
            }
            Watch::Accounts(ids) => {
                // Each id is one look-up in the store; a customer's pages watch one account.
                if ids.len() > MAX_WATCHED_BY_CUSTOMER {
                    return Ok(Watch::Accounts(Vec::new()));
                }
                let mut own = Vec::with_capacity(ids.len());
                for id in ids {
                    // The event store, not the read model: a page opened on an account just
                    // created watches it before the read model knows it.
                    if history.owner(id).await?.is_some_and(|found| found == owner) {
                        own.push(id);
                    }
                }
                Ok(Watch::Accounts(own))
            }
        }
    }

    /// The streams to subscribe to (`None`: all).
    pub fn streams(&self) -> Option<Vec<Uuid>> {
        match self {
            Watch::Everything => None,
            Watch::Accounts(ids) => Some(ids.clone()),
        }
    }

    /// A feed message as this subscriber reads it, or `None` if it concerns nothing it watches.
    pub fn progress(&self, changes: &Changes) -> Option<LiveProgress> {
        let Some(streams) = &changes.streams else {
            return Some(LiveProgress {
                position: changes.position,
                accounts: Vec::new(),
                opened: Vec::new(),
                everything: true,
            });
        };
        let watched = |id: &Uuid| match self {
            Watch::Everything => true,
            Watch::Accounts(ids) => ids.contains(id),
        };
        let accounts: Vec<Uuid> = streams.iter().map(|stream| stream.stream_id).filter(watched).collect();
        if accounts.is_empty() {
            return None;
        }
        let opened = streams
            .iter()
            .filter(|stream| stream.first_version == 1 && watched(&stream.stream_id))
            .map(|stream| stream.stream_id)
            .collect();
        Some(LiveProgress { position: changes.position, accounts, opened, everything: false })
    }
}

#[cfg(test)]
mod tests {
    use eventstore::Position;
    use eventstore::store::ChangedStream;

    use super::*;

    fn changes(streams: Option<Vec<(Uuid, i64)>>) -> Changes {
        Changes {
            position: Position { transaction_id: 9, global_position: 4 },
            streams: streams.map(|streams| {
                streams
                    .into_iter()
                    .map(|(stream_id, first_version)| ChangedStream { stream_id, first_version })
                    .collect()
            }),
        }
    }

    #[test]
    fn a_subscriber_hears_only_of_the_accounts_it_watches() {
        let (mine, other, new) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let batch = changes(Some(vec![(mine, 3), (other, 7), (new, 1)]));

        let everything = Watch::Everything.progress(&batch).unwrap();
        assert_eq!(everything.accounts, [mine, other, new]);
        assert_eq!(everything.opened, [new]);

        let watching_mine = Watch::Accounts(vec![mine]);
        let narrowed = watching_mine.progress(&batch).unwrap();
        assert_eq!((narrowed.accounts, narrowed.opened), (vec![mine], vec![]));
        assert_eq!(watching_mine.progress(&changes(Some(vec![(other, 8)]))), None);
        // Too much to name: everyone refetches.
        assert!(watching_mine.progress(&changes(None)).unwrap().everything);
    }

    #[test]
    fn a_watch_list_is_parsed_at_the_edge() {
        let id = Uuid::new_v4();
        assert_eq!(Watch::parse(None), Ok(Watch::Everything));
        assert_eq!(Watch::parse(Some(&id.to_string())), Ok(Watch::Accounts(vec![id])));
        assert!(Watch::parse(Some("yesterday")).is_err());
        let too_many = vec![id.to_string(); MAX_WATCHED + 1].join(",");
        assert!(Watch::parse(Some(&too_many)).is_err());
    }
}
