/*
 * merge_meta.c: the merger's metadata (cJSON): the update on merge and the check of a record's.
 */
#include <cJSON.h>

#include "merge.h"

/* ------------------------------------------------------------------------------------------
 * Metadata updates on merge (cJSON). Unions keep the old items first, then new ones not yet
 * present (compared by their JSON text); the original's list(set(...)) has no defined order.
 */
static void json_union(cJSON *dst_obj, const char *key, const cJSON *add)
{
    if (!cJSON_IsArray(add)) add = NULL;
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(dst_obj, key);
    if (!cJSON_IsArray(arr)) {
        cJSON_DeleteItemFromObjectCaseSensitive(dst_obj, key);
        arr = cJSON_AddArrayToObject(dst_obj, key);
        if (!arr) return;
    }
    for (const cJSON *it = add ? add->child : NULL; it; it = it->next) {
        char *t = cJSON_PrintUnformatted(it);
        int found = 0;
        for (const cJSON *e = arr->child; e && t && !found; e = e->next) {
            char *u = cJSON_PrintUnformatted(e);
            found = u && !strcmp(t, u);
            cJSON_free(u);
        }
        if (t && !found) cJSON_AddItemToArray(arr, cJSON_Duplicate(it, 1));
        cJSON_free(t);
    }
}

/* New metadata string (owned, chrys_ allocator) for entry meta `old` merged with record meta
 * `rec`, or NULL when neither has metadata. *rc is set on allocation failure. */
char *merger_merged_meta(const chrys_merger *m, const char *old, const char *rec, int *rc)
{
    *rc = CHRYS_OK;
    if (!old && !rec) return NULL;
    cJSON *eo = old ? cJSON_Parse(old) : cJSON_CreateObject();
    cJSON *ro = rec ? cJSON_Parse(rec) : NULL;
    char *out = NULL;
    if (old && eo && !cJSON_IsObject(eo)) {
        *rc = CHRYS_CORRUPT; /* stored metadata of an entry is not a JSON object */
        cJSON_Delete(eo);
        cJSON_Delete(ro);
        return NULL;
    }
    if (!eo) {
        *rc = old ? CHRYS_CORRUPT : CHRYS_NOMEM;
        cJSON_Delete(ro);
        return NULL;
    }
    if (m->opts.variant == CHRYS_MERGE_EMBEDDING) {
        const cJSON *pa = ro ? cJSON_GetObjectItemCaseSensitive(ro, "processed_at") : NULL;
        cJSON_DeleteItemFromObjectCaseSensitive(eo, "last_merged_at");
        if (pa) cJSON_AddItemToObject(eo, "last_merged_at", cJSON_Duplicate(pa, 1));
        else cJSON_AddStringToObject(eo, "last_merged_at", "");
        const cJSON *d = ro ? cJSON_GetObjectItemCaseSensitive(ro, "descriptors") : NULL;
        if (d) json_union(eo, "descriptors", d);
    } else {
        json_union(eo, "salts_used", ro ? cJSON_GetObjectItemCaseSensitive(ro, "salts_used") : NULL);
    }
    {
        char *s = cJSON_PrintUnformatted(eo);
        if (s) {
            out = chrys_strdup(s);
            cJSON_free(s);
        }
    }
    if (!out) *rc = CHRYS_NOMEM; /* the inputs were validated as objects: only memory can fail */
    cJSON_Delete(eo);
    cJSON_Delete(ro);
    return out;
}

int merger_meta_is_object(const char *json)
{
    cJSON *o = cJSON_Parse(json);
    int ok = cJSON_IsObject(o);
    cJSON_Delete(o);
    return ok;
}
