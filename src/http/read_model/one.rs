//! One row of a read model by its id: `GET {API.one.path}`, with `fields` as on lists.

use axum::extract::Path;
use axum::response::Response;

use std::sync::Arc;

use super::super::error::ApiError;
use super::super::fields::Fields;
use super::super::params::{QueryParams, path_id};
use super::super::response_cache::shows::{OneRow, Shows};
use super::request::{Read, refuse, visible_fields};
use super::respond::respond_with_one;
use crate::views::ReadModel;

pub async fn one<M: ReadModel>(Path(id): Path<String>, read: Read) -> Result<Response, ApiError> {
    let api = M::API.one.expect("routed only for models with single rows");
    let id = path_id(api.param, id)?;
    let restriction = read.restriction::<M>()?;
    let mut params = QueryParams::parse(read.query())?;
    let mut refusals = Vec::new();
    let fields = visible_fields(
        Fields::parse::<M::Row>(&mut params),
        &restriction,
        &mut refusals,
    );
    refuse(refusals)?;
    params.finish(&["fields"])?;
    let key = api.path.replace(&format!("{{{}}}", api.param), &id);
    let fetch = async {
        let row = M::one(&read.db.pool, &id).await?;
        // A row outside the role's scope is as absent as one that does not exist.
        let admitted = |row: &M::Row| {
            !restriction.has_scope()
                || serde_json::to_value(row).is_ok_and(|json| restriction.admits(&json))
        };
        let row = row.filter(admitted).ok_or_else(|| {
            ApiError::NotFound(format!("There is no {} with id '{id}'.", api.noun))
        })?;
        let shows: Arc<dyn Shows> = Arc::new(OneRow::<M>::new(id.clone()));
        Ok((row, Some(shows)))
    };
    respond_with_one(&read, M::VIEW, &key, &fields, fetch).await
}
