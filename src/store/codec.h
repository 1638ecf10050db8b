/*
 * codec.h: the one little-endian byte codec. File bytes are never cast to structs.
 *
 * Scalars go through put_/get_ helpers that assemble bytes explicitly, so they are correct on any
 * host. Bulk arrays (ids, norms, vectors) are copied as they are on little-endian hosts, the only
 * ones we build for; the static assertion below turns a big-endian build into a compile error
 * rather than a silently wrong file.
 */
#ifndef CHRYS_CODEC_H
#define CHRYS_CODEC_H

#include <stdint.h>
#include <string.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "bulk arrays are stored little-endian: add byte swapping for this host");

static inline void put_u16le(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
static inline void put_u32le(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline void put_u64le(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline void put_f32le(unsigned char *p, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    put_u32le(p, v);
}
static inline void put_f64le(unsigned char *p, double f)
{
    uint64_t v;
    memcpy(&v, &f, 8);
    put_u64le(p, v);
}
static inline uint16_t get_u16le(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t get_u32le(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t get_u64le(const unsigned char *p)
{
    return (uint64_t)get_u32le(p) | ((uint64_t)get_u32le(p + 4) << 32);
}
static inline float get_f32le(const unsigned char *p)
{
    uint32_t v = get_u32le(p);
    float f;
    memcpy(&f, &v, 4);
    return f;
}
static inline double get_f64le(const unsigned char *p)
{
    uint64_t v = get_u64le(p);
    double f;
    memcpy(&f, &v, 8);
    return f;
}

#endif
