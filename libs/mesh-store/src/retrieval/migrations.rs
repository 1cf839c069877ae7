//! Schema of the retrieval service's tables. Migrations are append-only.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateTables)]
    }

    fn migration_table_name() -> sea_orm::DynIden {
        "ret_seaql_migrations".into_iden()
    }
}

#[derive(DeriveMigrationName)]
struct CreateTables;

#[derive(DeriveIden)]
enum RetCollections {
    Table,
    Id,
    Tenant,
    Name,
    EmbeddingModel,
    Dimension,
    ChunkTokens,
    OverlapTokens,
    Generation,
    CreatedAtMs,
}

#[derive(DeriveIden)]
enum RetDocuments {
    Table,
    Id,
    CollectionId,
    DocId,
    Text,
    Metadata,
    ContentHash,
    ChunkCount,
    UpdatedAtMs,
}

#[derive(DeriveIden)]
enum RetChunks {
    Table,
    Id,
    CollectionId,
    DocumentId,
    ChunkIndex,
    Text,
    Embedding,
}

#[derive(DeriveIden)]
enum RetIngestJobs {
    Table,
    Id,
    Tenant,
    Collection,
    State,
    TotalDocuments,
    DoneDocuments,
    FailedDocuments,
    TotalParts,
    DoneParts,
    Error,
    CreatedAtMs,
    UpdatedAtMs,
}

#[derive(DeriveIden)]
enum RetIngestParts {
    Table,
    Id,
    JobId,
    Part,
    Documents,
    Failed,
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RetCollections::Table)
                    .if_not_exists()
                    .col(big_pk_auto(RetCollections::Id))
                    .col(string_len(RetCollections::Tenant, 63))
                    .col(string_len(RetCollections::Name, 63))
                    .col(string_len(RetCollections::EmbeddingModel, 200))
                    .col(integer(RetCollections::Dimension))
                    .col(integer(RetCollections::ChunkTokens))
                    .col(integer(RetCollections::OverlapTokens))
                    .col(big_integer(RetCollections::Generation))
                    .col(big_integer(RetCollections::CreatedAtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ret_collections_key")
                    .table(RetCollections::Table)
                    .col(RetCollections::Tenant)
                    .col(RetCollections::Name)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RetDocuments::Table)
                    .if_not_exists()
                    .col(big_pk_auto(RetDocuments::Id))
                    .col(big_integer(RetDocuments::CollectionId))
                    .col(string_len(RetDocuments::DocId, 256))
                    .col(text(RetDocuments::Text))
                    .col(text(RetDocuments::Metadata))
                    .col(string_len(RetDocuments::ContentHash, 64))
                    .col(integer(RetDocuments::ChunkCount))
                    .col(big_integer(RetDocuments::UpdatedAtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ret_documents_key")
                    .table(RetDocuments::Table)
                    .col(RetDocuments::CollectionId)
                    .col(RetDocuments::DocId)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RetChunks::Table)
                    .if_not_exists()
                    .col(big_pk_auto(RetChunks::Id))
                    .col(big_integer(RetChunks::CollectionId))
                    .col(big_integer(RetChunks::DocumentId))
                    .col(integer(RetChunks::ChunkIndex))
                    .col(text(RetChunks::Text))
                    .col(var_binary(RetChunks::Embedding, 65_536))
                    .to_owned(),
            )
            .await?;
        // Loading a collection's index reads all its chunks; replacing a
        // document deletes its chunks.
        manager
            .create_index(
                Index::create()
                    .name("ret_chunks_collection")
                    .table(RetChunks::Table)
                    .col(RetChunks::CollectionId)
                    .col(RetChunks::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ret_chunks_document")
                    .table(RetChunks::Table)
                    .col(RetChunks::DocumentId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RetIngestJobs::Table)
                    .if_not_exists()
                    .col(string_len(RetIngestJobs::Id, 36).primary_key())
                    .col(string_len(RetIngestJobs::Tenant, 63))
                    .col(string_len(RetIngestJobs::Collection, 63))
                    .col(string_len(RetIngestJobs::State, 16))
                    .col(integer(RetIngestJobs::TotalDocuments))
                    .col(integer(RetIngestJobs::DoneDocuments))
                    .col(integer(RetIngestJobs::FailedDocuments))
                    .col(integer(RetIngestJobs::TotalParts))
                    .col(integer(RetIngestJobs::DoneParts))
                    .col(text_null(RetIngestJobs::Error))
                    .col(big_integer(RetIngestJobs::CreatedAtMs))
                    .col(big_integer(RetIngestJobs::UpdatedAtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RetIngestParts::Table)
                    .if_not_exists()
                    .col(big_pk_auto(RetIngestParts::Id))
                    .col(string_len(RetIngestParts::JobId, 36))
                    .col(integer(RetIngestParts::Part))
                    .col(integer(RetIngestParts::Documents))
                    .col(integer(RetIngestParts::Failed))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ret_ingest_parts_key")
                    .table(RetIngestParts::Table)
                    .col(RetIngestParts::JobId)
                    .col(RetIngestParts::Part)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            RetIngestParts::Table.into_iden(),
            RetIngestJobs::Table.into_iden(),
            RetChunks::Table.into_iden(),
            RetDocuments::Table.into_iden(),
            RetCollections::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
