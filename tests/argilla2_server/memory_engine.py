"""An in-memory ``SearchEngine`` for the real argilla-server 2.x (runs inside the server's own venv).

The server picks its search engine by name (``ARGILLA_SEARCH_ENGINE``) from ``SearchEngine``'s
registry; this one is registered as ``memory`` before the app is imported (see ``launch.py``), so the
server runs here without Elasticsearch/OpenSearch. Everything else (database, validation, auth, the
bulk upsert) is the real server code. It keeps, per dataset, the documents the server indexes and
answers what the API and the UI ask of a search engine: search (text, terms/range filters on record
status, response status, metadata and suggestions; sort by insertion), progress and metrics.
Not covered: similarity search (vectors).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Union

from argilla_server.search_engine import (
    AndFilter,
    FloatMetadataMetrics,
    IntegerMetadataMetrics,
    MetadataFilterScope,
    RangeFilter,
    RecordFilterScope,
    ResponseFilterScope,
    SearchEngine,
    SearchResponseItem,
    SearchResponses,
    SuggestionFilterScope,
    TermsFilter,
    TermsMetrics,
    TextQuery,
)

# dataset id -> record id -> document
_INDEX: Dict[str, Dict[str, dict]] = {}


def _response_doc(response) -> dict:
    return {"id": str(response.id), "user_id": str(response.user_id),
            "status": getattr(response.status, "value", response.status), "values": response.values or {}}


def _suggestion_doc(suggestion) -> dict:
    return {"question": suggestion.question.name, "value": suggestion.value, "score": suggestion.score,
            "agent": suggestion.agent, "type": getattr(suggestion.type, "value", suggestion.type)}


@SearchEngine.register(engine_name="memory")
class MemorySearchEngine(SearchEngine):
    @classmethod
    async def new_instance(cls) -> "MemorySearchEngine":
        return cls()

    async def close(self):
        pass

    async def ping(self) -> bool:
        return True

    async def info(self) -> dict:
        return {"distribution": "memory", "version": "1"}

    # -- indexes ----------------------------------------------------------------------------------
    async def create_index(self, dataset):
        _INDEX.setdefault(str(dataset.id), {})

    async def delete_index(self, dataset):
        _INDEX.pop(str(dataset.id), None)

    async def configure_metadata_property(self, dataset, metadata_property):
        pass

    async def configure_index_vectors(self, vector_settings):
        pass

    # -- documents --------------------------------------------------------------------------------
    async def index_records(self, dataset, records: Iterable):
        index = _INDEX.setdefault(str(dataset.id), {})
        for record in records:
            old = index.get(str(record.id), {})
            index[str(record.id)] = {
                "id": str(record.id),
                "external_id": record.external_id,
                "fields": dict(record.fields or {}),
                "metadata": dict(record.metadata_ or {}),
                "status": getattr(record.status, "value", record.status),
                "inserted_at": record.inserted_at,
                "order": old.get("order", len(index)),
                "responses": {r["user_id"]: r for r in map(_response_doc, record.responses or [])},
                "suggestions": {s["question"]: s for s in map(_suggestion_doc, record.suggestions or [])},
            }

    def _doc(self, record) -> Optional[dict]:
        return _INDEX.get(str(record.dataset_id), {}).get(str(record.id))

    async def partial_record_update(self, record, **update):
        doc = self._doc(record)
        if doc is not None:
            doc.update({k: getattr(v, "value", v) for k, v in update.items()})

    async def delete_records(self, dataset, records: Iterable):
        index = _INDEX.get(str(dataset.id), {})
        for record in records:
            index.pop(str(record.id), None)

    async def update_record_response(self, response):
        doc = self._doc(response.record)
        if doc is not None:
            doc["responses"][str(response.user_id)] = _response_doc(response)
            doc["status"] = getattr(response.record.status, "value", response.record.status)

    async def delete_record_response(self, response):
        doc = self._doc(response.record)
        if doc is not None:
            doc["responses"].pop(str(response.user_id), None)

    async def update_record_suggestion(self, suggestion):
        doc = self._doc(suggestion.record)
        if doc is not None:
            doc["suggestions"][suggestion.question.name] = _suggestion_doc(suggestion)

    async def delete_record_suggestion(self, suggestion):
        doc = self._doc(suggestion.record)
        if doc is not None:
            doc["suggestions"].pop(suggestion.question.name, None)

    # -- reading ----------------------------------------------------------------------------------
    async def get_dataset_progress(self, dataset) -> dict:
        if dataset.is_draft:
            return {}
        docs = list(_INDEX.get(str(dataset.id), {}).values())
        out: Dict[str, int] = {"total": len(docs)}
        for d in docs:
            out[d["status"]] = out.get(d["status"], 0) + 1
        return out

    async def get_dataset_user_progress(self, dataset, user) -> dict:
        if dataset.is_draft:
            return {}
        out: Dict[str, int] = {"total": 0}
        for d in _INDEX.get(str(dataset.id), {}).values():
            r = d["responses"].get(str(user.id))
            if r:
                out["total"] += 1
                out[r["status"]] = out.get(r["status"], 0) + 1
        return out

    def _values(self, doc: dict, scope) -> List[Any]:
        if isinstance(scope, RecordFilterScope):
            return [doc.get(scope.property)]
        if isinstance(scope, MetadataFilterScope):
            v = doc["metadata"].get(scope.metadata_property)
            return v if isinstance(v, list) else [v]
        if isinstance(scope, SuggestionFilterScope):
            s = doc["suggestions"].get(scope.question)
            v = None if s is None else s.get(scope.property or "value")
            return v if isinstance(v, list) else [v]
        if isinstance(scope, ResponseFilterScope):
            responses = list(doc["responses"].values())
            if scope.user is not None:
                responses = [r for r in responses if r["user_id"] == str(scope.user.id)]
            if scope.property == "status" or (scope.question is None and scope.property is None):
                return [r["status"] for r in responses] or ["pending"]
            out = []
            for r in responses:
                v = (r["values"].get(scope.question) or {}).get("value")
                out += v if isinstance(v, list) else [v]
            return out
        raise NotImplementedError(f"memory search engine: filter scope {scope!r}")

    def _match(self, doc: dict, flt) -> bool:
        if flt is None:
            return True
        if isinstance(flt, AndFilter):
            return all(self._match(doc, f) for f in flt.filters)
        if isinstance(flt, TermsFilter):
            wanted = {str(v) for v in flt.values}
            return any(str(getattr(v, "value", v)) in wanted for v in self._values(doc, flt.scope))
        if isinstance(flt, RangeFilter):
            return any(v is not None and (flt.ge is None or v >= flt.ge) and (flt.le is None or v <= flt.le)
                       for v in self._values(doc, flt.scope))
        raise NotImplementedError(f"memory search engine: filter {flt!r}")

    async def search(self, dataset, query: Optional[Union[TextQuery, str]] = None, filter=None, sort=None,
                     offset: int = 0, limit: int = 100, user_id: Optional[str] = None) -> SearchResponses:
        docs = sorted(_INDEX.get(str(dataset.id), {}).values(), key=lambda d: d["order"])
        if query is not None:
            q = (query if isinstance(query, str) else query.q).lower()
            field = None if isinstance(query, str) else query.field
            docs = [d for d in docs if any(q in str(v).lower() for k, v in d["fields"].items()
                                           if field is None or k == field)]
        docs = [d for d in docs if self._match(d, filter)]
        for order in reversed(sort or []):
            docs.sort(key=lambda d: (self._values(d, order.scope)[0] is None, str(self._values(d, order.scope)[0])),
                      reverse=getattr(order.order, "value", order.order) == "desc")
        items = [SearchResponseItem(record_id=d["id"], score=None) for d in docs[offset:offset + limit]]
        return SearchResponses(items=items, total=len(docs))

    async def compute_metrics_for(self, metadata_property):
        docs = _INDEX.get(str(metadata_property.dataset_id), {}).values()
        values = [d["metadata"].get(metadata_property.name) for d in docs]
        values = [v for v in values if v is not None]
        kind = getattr(metadata_property.type, "value", metadata_property.type)
        if kind == "terms":
            counts: Dict[str, int] = {}
            for v in values:
                for t in v if isinstance(v, list) else [v]:
                    counts[str(t)] = counts.get(str(t), 0) + 1
            return TermsMetrics(total=len(counts), values=[TermsMetrics.TermCount(term=t, count=c)
                                                           for t, c in sorted(counts.items(), key=lambda kv: -kv[1])])
        cls = IntegerMetadataMetrics if kind == "integer" else FloatMetadataMetrics
        return cls(min=min(values) if values else None, max=max(values) if values else None)

    async def similarity_search(self, *args, **kwargs):
        raise NotImplementedError("memory search engine: no vector search")
