//! SQL fragments diesel's DSL lacks, written so that the statements around them stay
//! **prepared once per connection**: diesel refuses to cache any statement that contains
//! `dsl::sql(…)` (its text could vary), which costs every execution a `Parse` — an extra round
//! trip and a fresh plan in Postgres. A [`StaticSql`] is a constant text with no binds, so the
//! statement's text is fixed and diesel caches it by that text.

use std::marker::PhantomData;

use diesel::{
    backend::Backend,
    expression::{AppearsOnTable, Expression, SelectableExpression, TypedExpressionType, ValidGrouping, is_aggregate},
    query_builder::{AstPass, QueryFragment, QueryId},
    result::QueryResult,
};

/// A constant SQL expression of type `ST` (a column expression, a correlated subquery…).
#[derive(Debug)]
pub struct StaticSql<ST> {
    text: &'static str,
    sql_type: PhantomData<ST>,
}

impl<ST> Clone for StaticSql<ST> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<ST> Copy for StaticSql<ST> {}

/// `text` as an expression of type `ST`; the caller vouches for the type, as with `dsl::sql`.
pub const fn static_sql<ST>(text: &'static str) -> StaticSql<ST> {
    StaticSql {
        text,
        sql_type: PhantomData,
    }
}

impl<ST: TypedExpressionType> Expression for StaticSql<ST> {
    type SqlType = ST;
}

impl<ST, DB: Backend> QueryFragment<DB> for StaticSql<ST> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(self.text);
        Ok(())
    }
}

/// No static query id: diesel then caches the statement by its SQL text, which includes ours.
impl<ST> QueryId for StaticSql<ST> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<ST, GB> ValidGrouping<GB> for StaticSql<ST> {
    type IsAggregate = is_aggregate::Never;
}

impl<ST: TypedExpressionType, QS> SelectableExpression<QS> for StaticSql<ST> {}

impl<ST: TypedExpressionType, QS> AppearsOnTable<QS> for StaticSql<ST> {}

/// A keyset condition, `(<key>, <tie>) > (<bound>, $id)` (`<` when descending): the rows after a
/// cursor in `ORDER BY <key>, <tie>`. `key` and `tie` are constant SQL (the very expressions the
/// index is built on); the bound is a bind parameter, or a constant literal where the value
/// cannot be carried (`'infinity'::timestamptz`). The text depends only on the constants, so the
/// statement stays cacheable.
#[derive(Debug, Clone)]
pub struct After<ST, T> {
    key: &'static str,
    tie: &'static str,
    descending: bool,
    bound: Bound<T>,
    id: uuid::Uuid,
    sql_type: PhantomData<ST>,
}

/// The key's side of an [`After`] condition.
#[derive(Debug, Clone)]
pub enum Bound<T> {
    Value(T),
    Literal(&'static str),
}

pub const fn after<ST, T>(
    key: &'static str,
    tie: &'static str,
    descending: bool,
    bound: Bound<T>,
    id: uuid::Uuid,
) -> After<ST, T> {
    After {
        key,
        tie,
        descending,
        bound,
        id,
        sql_type: PhantomData,
    }
}

impl<ST, T> Expression for After<ST, T> {
    type SqlType = diesel::sql_types::Bool;
}

impl<ST, T> QueryFragment<diesel::pg::Pg> for After<ST, T>
where
    ST: diesel::sql_types::SqlType,
    diesel::pg::Pg: diesel::sql_types::HasSqlType<ST>,
    T: diesel::serialize::ToSql<ST, diesel::pg::Pg>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, diesel::pg::Pg>) -> QueryResult<()> {
        out.push_sql("(");
        out.push_sql(self.key);
        out.push_sql(", ");
        out.push_sql(self.tie);
        out.push_sql(if self.descending { ") < (" } else { ") > (" });
        match &self.bound {
            Bound::Value(v) => out.push_bind_param::<ST, T>(v)?,
            Bound::Literal(l) => out.push_sql(l),
        }
        out.push_sql(", ");
        out.push_bind_param::<diesel::sql_types::Uuid, uuid::Uuid>(&self.id)?;
        out.push_sql(")");
        Ok(())
    }
}

impl<ST, T> QueryId for After<ST, T> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<ST, T, GB> ValidGrouping<GB> for After<ST, T> {
    type IsAggregate = is_aggregate::Never;
}

impl<ST, T, QS> SelectableExpression<QS> for After<ST, T> {}

impl<ST, T, QS> AppearsOnTable<QS> for After<ST, T> {}
