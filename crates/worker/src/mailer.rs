//! Outgoing mail behind a small enum: SMTP (lettre, pooled, STARTTLS/TLS as the URL says) or
//! `.eml` files in a folder for local development (refused in production).

use std::path::PathBuf;

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
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mailer::Smtp(_) => f.write_str("Mailer::Smtp"),
            Mailer::File(_, dir) => write!(f, "Mailer::File({})", dir.display()),
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

    pub async fn send(&self, from: &Mailbox, to: Mailbox, body: Rendered) -> anyhow::Result<()> {
        let message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(body.subject)
            .multipart(MultiPart::alternative_plain_html(body.text, body.html))
            .context("building the message")?;
        match self {
            Mailer::Smtp(t) => {
                t.send(message).await.context("SMTP send failed")?;
            }
            Mailer::File(t, _) => {
                t.send(message).await.context("writing the .eml file failed")?;
            }
        }
        Ok(())
    }
}

/// A recipient from stored (already validated) data; lettre encodes the display name, so no
/// header can be injected through it.
pub fn mailbox(name: &str, address: &str) -> anyhow::Result<Mailbox> {
    Ok(Mailbox::new(
        Some(name.to_owned()),
        address.parse().context("invalid recipient address")?,
    ))
}
