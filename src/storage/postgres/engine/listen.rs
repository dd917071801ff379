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

/// Keeps a connection LISTENing on the channel, telling the engine of
/// every ended reservation, and reconnecting when it breaks.
pub(super) async fn listen(
    target: Target,
    credentials: Credentials,
    channel: String,
    engine: mpsc::UnboundedSender<Notice>,
) {
    loop {
        if let Ok((client, mut connection)) = target.connect_raw(&credentials).await {
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
                while let Some(payload) = received.recv().await {
                    if let Some(name) = crate::storage::postgres::from_hex(&payload)
                        && engine.send(Notice::Released(name)).is_err()
                    {
                        return;
                    }
                }
            }
            driver.abort();
            let lost = Notice::Lost("the LISTEN connection was lost".into());
            if engine.send(lost).is_err() {
                return;
            }
        }
        if engine.is_closed() {
            return;
        }
        tokio::time::sleep(RELISTEN_PAUSE).await;
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
