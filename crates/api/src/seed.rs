//! Operator commands that write data: `seed` (demo accounts) and `create-admin`.

use domain::{Email, Password, Role, UserName};

use crate::{
    config::AppEnv,
    services::auth::{NewAccount, insert_account},
    state::AppState,
};

/// The demo accounts `api seed` creates. Their password is public (README): development only.
pub const DEMO_PASSWORD: &str = "demo-password-123";
pub const DEMO_ACCOUNTS: &[(&str, &str, Role)] = &[
    ("admin@example.com", "Demo Admin", Role::Admin),
    ("alice@example.com", "Alice Example", Role::User),
    ("bob@example.com", "Bob Example", Role::User),
    ("carol@example.com", "Carol Example", Role::User),
];

#[derive(Debug, PartialEq, Eq)]
pub enum Ensured {
    Created,
    Existed,
    Promoted,
}

/// Creates the account if it does not exist; with `promote`, makes an existing one an admin.
pub async fn ensure_account(
    state: &AppState,
    email: &str,
    password: &str,
    name: &str,
    role: Role,
) -> anyhow::Result<Ensured> {
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("invalid e-mail: {e:?}"))?;
    let mut conn = state.db.get().await.map_err(db::DbError::from)?;
    if let Some(user) = db::users::find_active_by_email(&mut conn, email.as_str()).await? {
        if role == Role::Admin && user.role != Role::Admin {
            let changes = db::users::UserChanges {
                role: Some(Role::Admin.as_str()),
                ..Default::default()
            };
            db::users::update(&mut conn, user.id, &changes).await?;
            return Ok(Ensured::Promoted);
        }
        return Ok(Ensured::Existed);
    }
    let account = NewAccount {
        email,
        password: Password::parse(password.to_owned(), "password")
            .map_err(|e| anyhow::anyhow!("invalid password: {e:?}"))?,
        name: UserName::parse(name).map_err(|e| anyhow::anyhow!("invalid name: {e:?}"))?,
        role,
    };
    let hash = state.hasher.hash(&account.password).await?;
    match insert_account(&mut conn, &account, &hash).await {
        Ok(_) => Ok(Ensured::Created),
        // Lost a race with a concurrent seed: the account exists now.
        Err(crate::services::Error::Conflict { .. }) => Ok(Ensured::Existed),
        Err(e) => Err(anyhow::anyhow!("creating {}: {e}", account.email.redacted())),
    }
}

pub async fn seed(state: &AppState) -> anyhow::Result<()> {
    if state.config.app_env == AppEnv::Production {
        anyhow::bail!("refusing to seed demo accounts with a public password in production");
    }
    for (email, name, role) in DEMO_ACCOUNTS {
        let outcome = ensure_account(state, email, DEMO_PASSWORD, name, *role).await?;
        tracing::info!(email = %email, ?outcome, "seed account");
    }
    seed_products(state).await
}

/// The demo catalogue: (sku, name, price in minor units, currency, stock). JPY has no minor
/// unit, so 1800 is ¥1,800; EUR has two, so 1250 is €12.50.
pub const DEMO_PRODUCTS: &[(&str, &str, i64, &str, i32)] = &[
    ("MUG-BLUE", "Blue enamel mug", 1250, "EUR", 40),
    ("TEE-LOGO", "Logo T-shirt", 2400, "EUR", 25),
    ("BOOK-RUST", "A book about Rust", 3900, "USD", 10),
    ("TEA-SENCHA", "Sencha green tea, 100 g", 1800, "JPY", 60),
    ("PEN-BRASS", "Brass pen", 1500, "GBP", 0),
];

/// Inserts the demo products that are missing (by SKU); existing ones are left as they are.
async fn seed_products(state: &AppState) -> anyhow::Result<()> {
    let mut conn = state.db.get().await.map_err(db::DbError::from)?;
    for (sku, name, price_cents, currency, stock) in DEMO_PRODUCTS {
        let new = db::products::NewProduct {
            id: uuid::Uuid::now_v7().into(),
            sku,
            name,
            description: None,
            price_cents: *price_cents,
            currency,
            stock: *stock,
            initial_stock: *stock,
        };
        match db::products::insert(&mut conn, &new).await {
            Ok(_) => tracing::info!(sku, "seed product"),
            Err(db::DbError::UniqueViolation { constraint }) if constraint == db::products::SKU_UNIQUE => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Bulk benchmark data (see `db::seed`): one bcrypt hash shared by every seed account.
pub async fn bulk(state: &AppState, users: i64, tasks: i64) -> anyhow::Result<()> {
    if state.config.app_env == AppEnv::Production {
        anyhow::bail!("refusing to seed benchmark accounts in production");
    }
    anyhow::ensure!(users > 0, "--users must be positive");
    let password = Password::parse(DEMO_PASSWORD.to_owned(), "password").map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let hash = state.hasher.hash(&password).await?;
    let started = std::time::Instant::now();
    let mut conn = state.db.get().await.map_err(db::DbError::from)?;
    let (users, tasks) = db::seed::bulk(&mut conn, users, tasks, &hash).await?;
    drop(conn);
    // Written behind the unit of work's back, for many users at once: every task page goes.
    state.cache.invalidate(crate::infra::cache::ns::TASKS).await;
    tracing::info!(users, tasks, secs = started.elapsed().as_secs_f64(), "bulk seed done");
    Ok(())
}
