//! One row of a read model by its id: `GET {API.one.path}`, with `fields` as on lists.

use axum::extract::Path;
use axum::response::Response;

use super::super::error::ApiError;
use super::super::fields::Fields;
use super::super::params::{QueryParams, path_id};
use super::request::Read;
use super::respond::respond_with_one;
use crate::views::ReadModel;

pub async fn one<M: ReadModel>(Path(id): Path<String>, read: Read) -> Result<Response, ApiError> {
    let api = M::API.one.expect("routed only for models with single rows");
    let id = path_id(api.param, id)?;
    let mut params = QueryParams::parse(read.query())?;
    let fields = Fields::parse::<M::Row>(&mut params);
    params.finish(&["fields"])?;
    let key = api.path.replace(&format!("{{{}}}", api.param), &id);
    let fetch = async {
        M::one(&read.db.pool, &id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("There is no {} with id '{id}'.", api.noun)))
    };
    respond_with_one(&read, M::VIEW, &key, &fields, fetch).await
}
