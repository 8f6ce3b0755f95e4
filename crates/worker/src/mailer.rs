//! Outgoing mail behind a small enum: SMTP (lettre, pooled, STARTTLS/TLS as the URL says),
//! `.eml` files in a folder for local development (refused in production), or memory (tests: the
//! messages are kept in an [`Inbox`] the test reads).

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
};

use crate::templates::Rendered;

#[derive(Clone)]
pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>, PathBuf),
    /// Keeps every message in memory; never fails.
    Memory(Inbox),
}

/// One message as [`Mailer::Memory`] kept it: the parts as rendered, and the whole message as it
/// would have gone over the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMail {
    /// The recipient's address.
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The RFC 5322 message (headers, MIME parts, transfer encodings).
    pub raw: String,
}

/// The messages a [`Mailer::Memory`] sent, oldest first. Clones share the same list.
#[derive(Debug, Clone, Default)]
pub struct Inbox(Arc<Mutex<Vec<SentMail>>>);

impl Inbox {
    pub fn messages(&self) -> Vec<SentMail> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn push(&self, mail: SentMail) {
        if let Ok(mut m) = self.0.lock() {
            m.push(mail);
        }
    }
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mailer::Smtp(_) => f.write_str("Mailer::Smtp"),
            Mailer::File(_, dir) => write!(f, "Mailer::File({})", dir.display()),
            Mailer::Memory(_) => f.write_str("Mailer::Memory"),
        }
    }
}

impl Mailer {
    /// `smtp://host:port` (plain, or `?tls=required` for STARTTLS), `smtps://user:pass@host`
    /// (implicit TLS).
    pub fn smtp(url: &str) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .context("SMTP_URL is not a valid smtp:// or smtps:// URL")?
            .timeout(Some(std::time::Duration::from_secs(15)))
            .build();
        Ok(Mailer::Smtp(transport))
    }

    pub fn file(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create MAIL_DIR {}", dir.display()))?;
        Ok(Mailer::File(AsyncFileTransport::new(&dir), dir))
    }

    /// Messages kept in memory (tests); read them through [`Mailer::inbox`].
    pub fn memory() -> Self {
        Mailer::Memory(Inbox::default())
    }

    /// The messages of a memory mailer; `None` for the others.
    pub fn inbox(&self) -> Option<&Inbox> {
        match self {
            Mailer::Memory(inbox) => Some(inbox),
            _ => None,
        }
    }

    pub async fn send(&self, from: &Mailbox, to: Mailbox, body: Rendered) -> anyhow::Result<()> {
        let to_address = to.email.to_string();
        let message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(body.subject.clone())
            .multipart(MultiPart::alternative_plain_html(body.text.clone(), body.html.clone()))
            .context("building the message")?;
        match self {
            Mailer::Smtp(t) => {
                t.send(message).await.context("SMTP send failed")?;
            }
            Mailer::File(t, _) => {
                t.send(message).await.context("writing the .eml file failed")?;
            }
            Mailer::Memory(inbox) => inbox.push(SentMail {
                to: to_address,
                subject: body.subject,
                text: body.text,
                html: body.html,
                raw: String::from_utf8_lossy(&message.formatted()).into_owned(),
            }),
        }
        Ok(())
    }
}

/// A recipient from stored (already validated) data; lettre encodes the display name, so no
/// header can be injected through it.
/// The recipient. The name the user typed is the display name only once the address is verified:
/// mail to an unverified address carries no free text of the requester's, not even in `To:`.
pub fn mailbox(name: &str, address: &str, verified: bool) -> anyhow::Result<Mailbox> {
    Ok(Mailbox::new(
        verified.then(|| name.to_owned()),
        address.parse().context("invalid recipient address")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::mailbox;

    #[test]
    fn an_unverified_recipient_gets_no_display_name() {
        let unverified = mailbox("Click evil.example now", "a@example.com", false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(unverified.to_string(), "a@example.com");
        let verified = mailbox("Ada", "a@example.com", true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(verified.to_string(), "Ada <a@example.com>");
    }
}
