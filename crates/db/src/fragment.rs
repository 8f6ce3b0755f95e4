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
