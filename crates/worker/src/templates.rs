//! E-mail templates: a subject, a text part and an HTML part per message.
//!
//! Everything in a message is our own text and our own URLs, except one thing a user typed: their
//! name, and only in the greeting. It goes in
//! - only when the recipient's address is verified ([`Recipient::verified`]). A message to an
//!   unverified address (the verification mail itself, and any other mail before the address is
//!   confirmed) greets with a plain "Hello," — whoever signed up with someone else's address cannot
//!   make our mail server deliver their text to that address;
//! - cleaned: invisible and control characters dropped, white space collapsed, at most
//!   [`NAME_MAX_CHARS`] characters (longer names end with "…");
//! - HTML-escaped in the HTML part (the text part is plain text).
//!
//! Links are our own (`PUBLIC_URL` plus a token) and are HTML-escaped in attributes too.
//!
//! Order messages also show what the shop's staff typed — product names (copied onto the order's
//! lines) and a tracking number — never anything of the customer's. That text goes through
//! [`shown`] (control and invisible characters dropped, white space collapsed) and is
//! HTML-escaped in the HTML part. Amounts are integer minor units, shown with the currency's own
//! decimals (`Currency::format`: `1500 JPY`, `15.00 EUR`).

use db::{
    orders::{OrderItemRow, OrderRow, RefundRow},
    users::User,
};
use domain::orders::{CancelReason, RefundStatus};
use domain::text::escape_html;

/// The longest name a greeting shows, in characters.
pub const NAME_MAX_CHARS: usize = 40;

/// A rendered message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Who a message goes to, as far as its content is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient<'a> {
    /// The name the user typed.
    pub name: &'a str,
    /// Whether the address has been confirmed by its owner.
    pub verified: bool,
}

impl<'a> From<&'a User> for Recipient<'a> {
    fn from(user: &'a User) -> Self {
        Self {
            name: &user.name,
            verified: user.email_verified_at.is_some(),
        }
    }
}

impl Recipient<'_> {
    /// The name as a greeting may show it: `None` for an unverified address or a name with
    /// nothing visible left.
    pub fn greeting_name(&self) -> Option<String> {
        if !self.verified {
            return None;
        }
        // Line breaks and other white space become spaces; what remains invisible is dropped.
        let visible: String = self
            .name
            .chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c })
            .filter(|c| !domain::text::is_invisible(*c))
            .collect();
        let name = domain::text::collapse_whitespace(&visible);
        if name.is_empty() {
            return None;
        }
        Some(if name.chars().count() > NAME_MAX_CHARS {
            let cut: String = name.chars().take(NAME_MAX_CHARS - 1).collect();
            format!("{}…", cut.trim_end())
        } else {
            name
        })
    }

    /// "Hello Ada," or "Hello,", as (text, html).
    fn greeting(&self) -> (String, String) {
        match self.greeting_name() {
            Some(name) => (format!("Hello {name},"), format!("Hello {},", escape_html(&name))),
            None => ("Hello,".to_owned(), "Hello,".to_owned()),
        }
    }
}

fn page(title: &str, body_html: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title></head>\
         <body style=\"font-family:sans-serif;max-width:560px;margin:auto\">{body_html}\
         <p style=\"color:#888;font-size:12px\">Task Shop</p></body></html>",
        escape_html(title)
    )
}

/// The address is not verified yet (that is what this mail is for), so it never shows the name.
pub fn verify_email<'a>(to: impl Into<Recipient<'a>>, link: &str) -> Rendered {
    let (hello, hello_html) = to.into().greeting();
    let subject = "Confirm your e-mail address".to_owned();
    let text = format!(
        "{hello}\n\nPlease confirm your e-mail address by opening this link (valid for 24 hours):\n\n{link}\n\n\
         If you did not create an account, ignore this message.\n"
    );
    let html = page(
        &subject,
        &format!(
            "<p>{hello_html}</p><p>Please confirm your e-mail address (the link is valid for 24 hours):</p>\
             <p><a href=\"{link}\">Confirm my address</a></p><p>If you did not create an account, ignore this message.</p>",
            link = escape_html(link)
        ),
    );
    Rendered { subject, text, html }
}

pub fn welcome<'a>(to: impl Into<Recipient<'a>>, public_url: &str) -> Rendered {
    let (hello, hello_html) = to.into().greeting();
    let subject = "Welcome to Task Shop".to_owned();
    let text = format!("{hello}\n\nYour address is confirmed. Welcome aboard!\n\n{public_url}\n");
    let html = page(
        &subject,
        &format!(
            "<p>{hello_html}</p><p>Your address is confirmed. Welcome aboard!</p><p><a href=\"{url}\">Open Task Shop</a></p>",
            url = escape_html(public_url)
        ),
    );
    Rendered { subject, text, html }
}

pub fn password_reset<'a>(to: impl Into<Recipient<'a>>, link: &str) -> Rendered {
    let (hello, hello_html) = to.into().greeting();
    let subject = "Reset your password".to_owned();
    let text = format!(
        "{hello}\n\nSomeone asked to reset your password. Open this link within 1 hour to choose a new one:\n\n\
         {link}\n\nIf it was not you, ignore this message: your password stays the same.\n"
    );
    let html = page(
        &subject,
        &format!(
            "<p>{hello_html}</p><p>Someone asked to reset your password. This link is valid for 1 hour:</p>\
             <p><a href=\"{link}\">Choose a new password</a></p>\
             <p>If it was not you, ignore this message: your password stays the same.</p>",
            link = escape_html(link)
        ),
    );
    Rendered { subject, text, html }
}

pub fn sessions_revoked<'a>(to: impl Into<Recipient<'a>>) -> Rendered {
    let (hello, hello_html) = to.into().greeting();
    let subject = "We signed you out of a session".to_owned();
    let text = format!(
        "{hello}\n\nA refresh token of one of your sessions was used twice, which can mean it was stolen. \
         We revoked that session to be safe. If this was not you, change your password.\n"
    );
    let html = page(
        &subject,
        &format!(
            "<p>{hello_html}</p><p>A refresh token of one of your sessions was used twice, which can mean it was stolen. \
             We revoked that session to be safe.</p><p>If this was not you, change your password.</p>"
        ),
    );
    Rendered { subject, text, html }
}

/// Staff-typed text (a product name, a tracking number) as a message shows it: one line, no
/// control or invisible characters, white space collapsed.
fn shown(raw: &str) -> String {
    let visible: String = raw
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .filter(|c| !c.is_control() && !domain::text::is_invisible(*c))
        .collect();
    domain::text::collapse_whitespace(&visible)
}

/// The order's lines and total, as (text, html): `2 × Mug  24.00 EUR` per line.
fn order_lines(order: &OrderRow, items: &[OrderItemRow]) -> (String, String) {
    let money = |minor: i64| order.currency.format(minor);
    let mut text = String::new();
    let mut rows = String::new();
    for item in items {
        let name = shown(&item.name);
        text.push_str(&format!(
            "  {} × {name}  {}\n",
            item.quantity,
            money(item.line_total_cents)
        ));
        rows.push_str(&format!(
            "<tr><td>{} × {}</td><td style=\"text-align:right\">{}</td></tr>",
            item.quantity,
            escape_html(&name),
            escape_html(&money(item.line_total_cents))
        ));
    }
    let total = money(order.total_cents);
    text.push_str(&format!("  Total  {total}\n"));
    let html = format!(
        "<table style=\"width:100%;border-collapse:collapse\">{rows}\
         <tr><td><strong>Total</strong></td><td style=\"text-align:right\"><strong>{}</strong></td></tr></table>",
        escape_html(&total)
    );
    (text, html)
}

/// The order was paid: its number, lines and total.
pub fn order_confirmation<'a>(to: impl Into<Recipient<'a>>, order: &OrderRow, items: &[OrderItemRow]) -> Rendered {
    let (hello, hello_html) = to.into().greeting();
    let number = order.number;
    let subject = format!("Order {number} confirmed");
    let (lines, lines_html) = order_lines(order, items);
    let text = format!(
        "{hello}\n\nThank you: we received your payment for order {number}.\n\n{lines}\n\
         We will let you know when it ships.\n"
    );
    let html = page(
        &subject,
        &format!(
            "<p>{hello_html}</p><p>Thank you: we received your payment for order {number}.</p>{lines_html}\
             <p>We will let you know when it ships.</p>"
        ),
    );
    Rendered { subject, text, html }
}

/// The order was shipped, with its tracking number if the shop gave one.
pub fn order_shipped<'a>(to: impl Into<Recipient<'a>>, order: &OrderRow) -> Rendered {
    let (hello, hello_html) = to.into().greeting();
    let number = order.number;
    let subject = format!("Order {number} shipped");
    let tracking = order.tracking_number.as_deref().map(shown).filter(|t| !t.is_empty());
    let (track, track_html) = match &tracking {
        Some(t) => (
            format!("Tracking number: {t}\n"),
            format!("<p>Tracking number: <strong>{}</strong></p>", escape_html(t)),
        ),
        None => (String::new(), String::new()),
    };
    let text = format!("{hello}\n\nYour order {number} is on its way.\n{track}");
    let html = page(
        &subject,
        &format!("<p>{hello_html}</p><p>Your order {number} is on its way.</p>{track_html}"),
    );
    Rendered { subject, text, html }
}

/// The order was cancelled: why, and the refund of a paid order (if there is one).
pub fn order_cancelled<'a>(to: impl Into<Recipient<'a>>, order: &OrderRow, refund: Option<&RefundRow>) -> Rendered {
    let (hello, hello_html) = to.into().greeting();
    let number = order.number;
    let subject = format!("Order {number} cancelled");
    let why = match order.cancel_reason.0 {
        Some(CancelReason::User) => "as you asked",
        Some(CancelReason::Admin) => "by our team",
        Some(CancelReason::Expired) => "because its payment did not arrive in time",
        None => "",
    };
    let said = if why.is_empty() {
        format!("Your order {number} was cancelled.")
    } else {
        format!("Your order {number} was cancelled {why}.")
    };
    let refund_text = refund.map(|r| {
        let amount = r.currency.format(r.amount_cents);
        match r.status {
            RefundStatus::Pending => format!("We are refunding {amount} to you; it may take a few days to arrive."),
            RefundStatus::Succeeded => format!("We refunded {amount} to you."),
            RefundStatus::Failed => {
                format!("Refunding {amount} to you failed; our team is on it and will contact you.")
            }
        }
    });
    // An unpaid order with no refund: say that nothing was charged.
    let money = refund_text.or_else(|| order.paid_at.is_none().then(|| "No payment was taken.".to_owned()));
    let text = match &money {
        Some(m) => format!("{hello}\n\n{said}\n\n{m}\n"),
        None => format!("{hello}\n\n{said}\n"),
    };
    let body = match &money {
        Some(m) => format!(
            "<p>{hello_html}</p><p>{}</p><p>{}</p>",
            escape_html(&said),
            escape_html(m)
        ),
        None => format!("<p>{hello_html}</p><p>{}</p>", escape_html(&said)),
    };
    let html = page(&subject, &body);
    Rendered { subject, text, html }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(name: &str) -> Recipient<'_> {
        Recipient { name, verified: true }
    }

    fn unverified(name: &str) -> Recipient<'_> {
        Recipient { name, verified: false }
    }

    /// Every template, for one recipient.
    fn all(to: Recipient<'_>) -> [Rendered; 4] {
        [
            verify_email(to, "http://x/verify-email?token=a&b"),
            welcome(to, "http://x"),
            password_reset(to, "http://x/reset-password?token=t"),
            sessions_revoked(to),
        ]
    }

    /// The text both parts show after the greeting: everything in them must be ours.
    fn after_greeting(r: &Rendered) -> [&str; 2] {
        [
            r.text.split_once(",\n").map_or("", |(_, rest)| rest),
            r.html.split_once(",</p>").map_or("", |(_, rest)| rest),
        ]
    }

    #[test]
    fn html_is_escaped_and_links_present() {
        let r = welcome(verified("<b>Eve</b> & co"), "http://x/?a=1&b=2");
        assert!(r.html.contains("Hello &lt;b&gt;Eve&lt;/b&gt; &amp; co,"), "{}", r.html);
        assert!(!r.html.contains("<b>Eve"));
        assert!(r.html.contains("http://x/?a=1&amp;b=2"));
        assert!(r.text.contains("Hello <b>Eve</b> & co,"), "the text part is plain text");
        let v = verify_email(unverified("A"), "http://x/verify-email?token=a&b");
        assert!(v.html.contains("http://x/verify-email?token=a&amp;b"));
        assert!(v.text.contains("http://x/verify-email?token=a&b"));
        for r in all(verified("A")) {
            assert!(!r.subject.is_empty() && r.text.starts_with("Hello A,") && r.html.contains("<p>Hello A,</p>"));
        }
    }

    /// Somebody signs up with another person's address and a "name" that is a message of their
    /// own: nothing of it reaches that address — not in the greeting, not anywhere else.
    #[test]
    fn mail_to_an_unverified_address_echoes_no_text_of_the_user() {
        let phishing = "Your account is locked, call +1 555 0100 or visit evil.example";
        for r in all(unverified(phishing)) {
            for part in [&r.subject, &r.text, &r.html] {
                assert!(
                    !part.contains("locked") && !part.contains("evil.example") && !part.contains("555"),
                    "{part}"
                );
            }
            assert!(
                r.text.starts_with("Hello,\n") && r.html.contains("<p>Hello,</p>"),
                "{}",
                r.text
            );
        }
    }

    #[test]
    fn the_name_appears_only_in_the_greeting_and_length_limited() {
        let long = format!("Ada {}", "x".repeat(200));
        for r in all(verified(&long)) {
            let greeting = r.text.lines().next().unwrap_or_default();
            let shown = greeting.trim_start_matches("Hello ").trim_end_matches(',');
            assert_eq!(shown.chars().count(), NAME_MAX_CHARS, "{greeting}");
            assert!(shown.ends_with('…'));
            for part in after_greeting(&r) {
                assert!(!part.contains("xxx") && !part.contains("Ada"), "{part}");
            }
            assert!(!r.subject.contains("Ada"));
        }
        let exact = "y".repeat(NAME_MAX_CHARS);
        assert!(
            welcome(verified(&exact), "http://x")
                .text
                .starts_with(&format!("Hello {exact},"))
        );
    }

    #[test]
    fn invisible_characters_and_line_breaks_never_reach_a_mail() {
        let sneaky = "Ada\u{202E}\u{200B}\r\n\r\nClick\u{00A0}\u{00A0}here\u{FEFF}";
        let r = welcome(verified(sneaky), "http://x");
        let greeting = r.text.lines().next().unwrap_or_default();
        assert_eq!(greeting, "Hello Ada Click here,");
        assert!(r.html.contains("<p>Hello Ada Click here,</p>"));
        // Nothing visible left: the plain greeting.
        assert!(
            welcome(verified("\u{200B}\u{3164} "), "http://x")
                .text
                .starts_with("Hello,\n")
        );
    }

    fn order(currency: &str, total_cents: i64) -> OrderRow {
        let now = chrono::Utc::now();
        OrderRow {
            id: uuid::Uuid::now_v7().into(),
            number: 10042,
            user_id: uuid::Uuid::now_v7().into(),
            status: domain::orders::OrderStatus::Paid,
            currency: domain::shop::Currency::parse(currency).unwrap(),
            total_cents,
            created_at: now,
            updated_at: now,
            expires_at: now,
            paid_at: Some(now),
            shipped_at: None,
            delivered_at: None,
            cancelled_at: None,
            cancel_reason: db::orders::Opt(None),
            tracking_number: None,
        }
    }

    fn line(order: &OrderRow, n: i32, name: &str, unit: i64, quantity: i32) -> OrderItemRow {
        OrderItemRow {
            order_id: order.id,
            line: n,
            product_id: uuid::Uuid::now_v7().into(),
            sku: format!("SKU-{n}"),
            name: name.to_owned(),
            unit_price_cents: unit,
            quantity,
            line_total_cents: unit * i64::from(quantity),
        }
    }

    fn refund(order: &OrderRow, status: RefundStatus) -> RefundRow {
        RefundRow {
            id: uuid::Uuid::now_v7(),
            order_id: order.id,
            payment_id: uuid::Uuid::now_v7(),
            amount_cents: order.total_cents,
            currency: order.currency,
            status,
            provider_event_id: None,
            created_at: order.created_at,
            updated_at: order.created_at,
        }
    }

    /// JPY has no minor unit: 1500 is ¥1500, never "15.00".
    #[test]
    fn jpy_amounts_have_no_decimals() {
        let o = order("JPY", 3500);
        let items = [line(&o, 0, "Tea bowl", 1500, 2), line(&o, 1, "Chopsticks", 500, 1)];
        let r = order_confirmation(verified("Ada"), &o, &items);
        assert_eq!(r.subject, "Order 10042 confirmed");
        for part in [&r.text, &r.html] {
            assert!(part.contains("2 × Tea bowl"), "{part}");
            assert!(
                part.contains("3000 JPY") && part.contains("500 JPY") && part.contains("3500 JPY"),
                "{part}"
            );
            assert!(
                !part.contains("30.00") && !part.contains("35.00") && !part.contains(".00 JPY"),
                "{part}"
            );
        }
        let c = order_cancelled(verified("Ada"), &o, Some(&refund(&o, RefundStatus::Pending)));
        assert!(c.text.contains("refunding 3500 JPY"), "{}", c.text);
    }

    /// EUR has two decimals: 2450 cents are 24.50 EUR.
    #[test]
    fn eur_amounts_have_two_decimals() {
        let o = order("EUR", 2905);
        let items = [line(&o, 0, "Mug", 1225, 2), line(&o, 1, "Spoon", 455, 1)];
        let r = order_confirmation(verified("Ada"), &o, &items);
        for part in [&r.text, &r.html] {
            assert!(part.contains("2 × Mug") && part.contains("24.50 EUR"), "{part}");
            assert!(part.contains("1 × Spoon") && part.contains("4.55 EUR"), "{part}");
            assert!(part.contains("29.05 EUR"), "{part}");
        }
        let lines: Vec<&str> = r.text.lines().filter(|l| l.contains(" EUR")).collect();
        assert_eq!(
            lines,
            ["  2 × Mug  24.50 EUR", "  1 × Spoon  4.55 EUR", "  Total  29.05 EUR"]
        );
        let c = order_cancelled(verified("Ada"), &o, Some(&refund(&o, RefundStatus::Succeeded)));
        assert!(c.text.contains("We refunded 29.05 EUR"), "{}", c.text);
    }

    #[test]
    fn shipped_shows_the_tracking_number_if_any() {
        let mut o = order("EUR", 100);
        let r = order_shipped(verified("Ada"), &o);
        assert_eq!(r.subject, "Order 10042 shipped");
        assert!(!r.text.contains("Tracking") && !r.html.contains("Tracking"));
        o.tracking_number = Some("1Z<999>&\u{200B}AA\r\n10".into());
        let r = order_shipped(verified("Ada"), &o);
        assert!(r.text.contains("Tracking number: 1Z<999>&AA 10\n"), "{}", r.text);
        assert!(
            r.html.contains("<strong>1Z&lt;999&gt;&amp;AA 10</strong>"),
            "{}",
            r.html
        );
    }

    #[test]
    fn cancelled_says_why_and_the_refund() {
        let mut o = order("GBP", 1999);
        o.paid_at = None;
        o.cancel_reason = db::orders::Opt(Some(CancelReason::Expired));
        let r = order_cancelled(verified("Ada"), &o, None);
        assert_eq!(r.subject, "Order 10042 cancelled");
        assert!(r.text.contains("payment did not arrive in time"), "{}", r.text);
        assert!(
            r.text.contains("No payment was taken.") && !r.text.contains("refund"),
            "{}",
            r.text
        );
        o.paid_at = Some(o.created_at);
        o.cancel_reason = db::orders::Opt(Some(CancelReason::User));
        let r = order_cancelled(verified("Ada"), &o, Some(&refund(&o, RefundStatus::Pending)));
        assert!(r.text.contains("cancelled as you asked"), "{}", r.text);
        assert!(
            r.text.contains("We are refunding 19.99 GBP") && r.html.contains("19.99 GBP"),
            "{}",
            r.text
        );
        assert!(!r.text.contains("No payment"));
        let r = order_cancelled(verified("Ada"), &o, Some(&refund(&o, RefundStatus::Failed)));
        assert!(r.text.contains("Refunding 19.99 GBP to you failed"), "{}", r.text);
    }

    /// Product names are staff text, escaped in HTML and kept on one line in the text part; the
    /// customer's name still follows the greeting rules.
    #[test]
    fn order_mails_escape_product_names_and_follow_the_greeting_rules() {
        let o = order("USD", 100);
        let items = [line(&o, 0, "<script>x</script> & \"Co\"\nSecond line", 100, 1)];
        let r = order_confirmation(verified("<b>Eve</b>"), &o, &items);
        assert!(!r.html.contains("<script>") && !r.html.contains("<b>Eve"), "{}", r.html);
        assert!(
            r.html
                .contains("&lt;script&gt;x&lt;/script&gt; &amp; &quot;Co&quot; Second line"),
            "{}",
            r.html
        );
        assert!(
            r.text
                .contains("1 × <script>x</script> & \"Co\" Second line  1.00 USD\n"),
            "{}",
            r.text
        );
        let phishing = "Your account is locked, visit evil.example";
        for r in [
            order_confirmation(unverified(phishing), &o, &items),
            order_shipped(unverified(phishing), &o),
            order_cancelled(unverified(phishing), &o, None),
        ] {
            assert!(r.text.starts_with("Hello,\n") && !r.text.contains("evil") && !r.html.contains("evil"));
        }
    }
}
