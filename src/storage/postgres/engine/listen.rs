//! The LISTEN connection: how the engine learns that a reservation ended
//! somewhere, so a request parked on it looks again at once instead of
//! at the reservation's expiry.

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Duration;
use tokio_postgres::AsyncMessage;

use super::messages::Notice;
use crate::storage::postgres::target::{Credentials, Target};

/// How long a broken LISTEN connection waits before it is made again.
const RELISTEN_PAUSE: Duration = Duration::from_millis(500);

/// How often failed attempts to make the LISTEN connection are told to
/// the engine (the first at once).
const LOST_AGAIN_EVERY: Duration = Duration::from_secs(5);

/// Keeps a connection LISTENing on the channel, telling the engine of
/// every ended reservation, and reconnecting when it breaks. Every
/// `patience` (the request timeout) the connection must show it is still
/// on a primary within `patience`: a frozen server (or a cut network)
/// breaks nothing, and a LISTEN left there would hear nothing from the
/// new primary after a failover.
pub(super) async fn listen(
    target: Target,
    credentials: Credentials,
    channel: String,
    engine: mpsc::UnboundedSender<Notice>,
    patience: Duration,
) {
    let patience = patience.max(RELISTEN_PAUSE);
    // Whether the last connection listened: its loss is told at once.
    // Failed attempts after it are told too, but at most every
    // LOST_AGAIN_EVERY: an outage that begins before the LISTEN connection
    // is made again must still show (the engine may have seen writes
    // work meanwhile), and a server that takes reads but refuses this
    // connection must not flap the engine's health twice a second.
    let mut listened = true;
    let mut told: Option<tokio::time::Instant> = None;
    loop {
        let attempt = target.connect_raw(&credentials).await;
        if let Err(err) = &attempt
            && told.is_none_or(|at| at.elapsed() >= LOST_AGAIN_EVERY)
        {
            told = Some(tokio::time::Instant::now());
            let lost = Notice::Lost(format!("cannot make the LISTEN connection: {err}"));
            if engine.send(lost).is_err() {
                return;
            }
        }
        if let Ok((client, mut connection)) = attempt {
            let (payloads, mut received) = mpsc::unbounded_channel::<String>();
            let driver = tokio::spawn(async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(Ok(message)) = messages.next().await {
                    if let AsyncMessage::Notification(n) = message
                        && payloads.send(n.payload().to_string()).is_err()
                    {
                        return;
                    }
                }
            });
            if client
                .batch_execute(&format!("LISTEN {channel}"))
                .await
                .is_ok()
            {
                if engine.send(Notice::Listening).is_err() {
                    return;
                }
                listened = true;
                let mut check =
                    tokio::time::interval_at(tokio::time::Instant::now() + patience, patience);
                loop {
                    tokio::select! {
                        payload = received.recv() => {
                            let Some(payload) = payload else { break };
                            if let Some(name) = crate::storage::postgres::from_hex(&payload)
                                && engine.send(Notice::Released(name)).is_err()
                            {
                                return;
                            }
                        }
                        _ = check.tick() => {
                            if let Err(reason) = still_primary(&client, patience).await {
                                log::warn!("postgres: the LISTEN connection is given up ({reason}); listening anew");
                                break;
                            }
                        }
                    }
                }
            }
            driver.abort();
            let lost = Notice::Lost("the LISTEN connection was lost".into());
            if std::mem::take(&mut listened) {
                told = Some(tokio::time::Instant::now());
                if engine.send(lost).is_err() {
                    return;
                }
            }
        }
        if engine.is_closed() {
            return;
        }
        tokio::time::sleep(RELISTEN_PAUSE).await;
    }
}

/// Whether `client` still answers, within `patience`, from a server out
/// of recovery (LISTEN on a standby would hear nothing).
async fn still_primary(client: &tokio_postgres::Client, patience: Duration) -> Result<(), String> {
    let asked = client.query_one("SELECT pg_is_in_recovery()", &[]);
    match tokio::time::timeout(patience, asked).await {
        Err(_) => Err(format!("no answer within {} ms", patience.as_millis())),
        Ok(Err(err)) => Err(crate::storage::postgres::describe(&err)),
        Ok(Ok(row)) => match row.try_get::<_, bool>(0) {
            Ok(false) => Ok(()),
            Ok(true) => Err("the server is a standby now".into()),
            Err(err) => Err(crate::storage::postgres::describe(&err)),
        },
    }
}

#[cfg(test)]
mod tests {
    /// NOTIFY payloads carry names as hex.
    #[test]
    fn hex_names_decode() {
        use crate::storage::postgres::from_hex;
        assert_eq!(from_hex("00ff41"), Some(vec![0, 255, b'A']));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
