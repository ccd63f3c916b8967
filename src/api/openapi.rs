//! The OpenAPI document's fixed parts: info, the Bearer security scheme, the error schema.
//! The paths come from the routers themselves (`api::openapi`).

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::error::{ErrorBody, ErrorDetail};

/// The document every route is added to.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "callplane",
        description = "The callplane control plane: calls, their timelines, recordings, trunks, scripts, webhooks and keys. See docs/api.md.",
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct BaseDoc;

/// Declares the `bearer` security scheme (`Authorization: Bearer cp_…`).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("cp_ + 40 hex digits")
                    .build(),
            ),
        );
    }
}

/// The base document (no paths yet).
pub(crate) fn base() -> utoipa::openapi::OpenApi {
    BaseDoc::openapi()
}
