//! The internal gRPC face (`agentmesh.v1.Retrieval`). The tenant comes from
//! the `agentmesh-tenant` metadata of the caller and nowhere else.

use std::sync::Arc;

use mesh_proto as pb;
use mesh_proto::retrieval_server::Retrieval;
use mesh_runtime::grpc::{server_span, tenant_of};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::service::Service;

#[derive(Clone)]
pub struct RetrievalGrpc {
    pub service: Arc<Service>,
}

/// Runs `op` for the caller's tenant inside a server span.
async fn call<T, R, F>(
    request: Request<T>,
    method: &'static str,
    op: impl FnOnce(String, T) -> F,
) -> Result<Response<R>, Status>
where
    F: std::future::Future<Output = Result<R, crate::error::RetrievalError>>,
{
    let span = server_span(&request, method);
    let tenant = tenant_of(&request)?;
    let message = request.into_inner();
    op(tenant, message)
        .instrument(span)
        .await
        .map(Response::new)
        .map_err(Status::from)
}

#[tonic::async_trait]
impl Retrieval for RetrievalGrpc {
    async fn create_collection(
        &self,
        request: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::Collection>, Status> {
        call(request, "CreateCollection", |tenant, m| async move {
            self.service.create_collection(&tenant, m).await
        })
        .await
    }

    async fn get_collection(
        &self,
        request: Request<pb::GetCollectionRequest>,
    ) -> Result<Response<pb::Collection>, Status> {
        call(request, "GetCollection", |tenant, m| async move {
            self.service.get_collection(&tenant, &m.name).await
        })
        .await
    }

    async fn list_collections(
        &self,
        request: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        call(request, "ListCollections", |tenant, _| async move {
            self.service.list_collections(&tenant).await
        })
        .await
    }

    async fn delete_collection(
        &self,
        request: Request<pb::DeleteCollectionRequest>,
    ) -> Result<Response<pb::DeleteCollectionResponse>, Status> {
        call(request, "DeleteCollection", |tenant, m| async move {
            let deleted = self.service.delete_collection(&tenant, &m.name).await?;
            Ok(pb::DeleteCollectionResponse { deleted })
        })
        .await
    }

    async fn upsert_documents(
        &self,
        request: Request<pb::UpsertDocumentsRequest>,
    ) -> Result<Response<pb::UpsertDocumentsResponse>, Status> {
        call(request, "UpsertDocuments", |tenant, m| async move {
            self.service.upsert(&tenant, m).await
        })
        .await
    }

    async fn get_document(
        &self,
        request: Request<pb::GetDocumentRequest>,
    ) -> Result<Response<pb::Document>, Status> {
        call(request, "GetDocument", |tenant, m| async move {
            self.service.get_document(&tenant, m).await
        })
        .await
    }

    async fn delete_documents(
        &self,
        request: Request<pb::DeleteDocumentsRequest>,
    ) -> Result<Response<pb::DeleteDocumentsResponse>, Status> {
        call(request, "DeleteDocuments", |tenant, m| async move {
            let deleted = self.service.delete_documents(&tenant, m).await?;
            Ok(pb::DeleteDocumentsResponse { deleted })
        })
        .await
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        call(request, "Search", |tenant, m| async move {
            self.service.search(&tenant, m).await
        })
        .await
    }

    async fn submit_ingest(
        &self,
        request: Request<pb::SubmitIngestRequest>,
    ) -> Result<Response<pb::IngestJob>, Status> {
        call(request, "SubmitIngest", |tenant, m| async move {
            self.service.submit_ingest(&tenant, m).await
        })
        .await
    }

    async fn get_ingest_job(
        &self,
        request: Request<pb::GetIngestJobRequest>,
    ) -> Result<Response<pb::IngestJob>, Status> {
        call(request, "GetIngestJob", |tenant, m| async move {
            self.service.get_ingest_job(&tenant, &m.id).await
        })
        .await
    }
}
