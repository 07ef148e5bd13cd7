/*
 * Float32 values printed in decimal, for a person to read and for the host to read back exactly.
 *
 * The digits are those of C's "%.9g" (nine significant digits, correctly rounded: enough for every float32
 * to come back as itself), with ".0" after an integral value so that a float never reads as an integer.
 * picolibc's printf would need soft double arithmetic (rv32imafc has no D extension) and several KiB of
 * code; the exact value of a float32 is small enough to expand in full: mantissa * 2^e with e in
 * [-149, 104] is an integer of at most 112 decimal digits divided by a power of ten.
 */
#include <stdint.h>
#include <string.h>

#include "tinyodl_rt.h"

#define LIMB 100000000u /* a big number's digits, 8 to a limb, least significant limb first */
#define MAX_LIMBS 15    /* 2^24 * 5^149 < 10^112 */
#define DIGITS 9

/* limbs *= factor, for a factor of at most 32: a limb times it plus the carry stays below 2^32. */
static void times(uint32_t *limbs, int *count, uint32_t factor)
{
    uint32_t carry = 0;
    for (int i = 0; i < *count; ++i) {
        uint32_t product = limbs[i] * factor + carry;
        limbs[i] = product % LIMB;
        carry = product / LIMB;
    }
    if (carry)
        limbs[(*count)++] = carry;
}

/* The decimal digits of a non-zero finite magnitude into `digits`; returns their number and sets *point so
 * that the value is 0.DIGITS times 10^point. */
static int expand(uint32_t biased, uint32_t mantissa, char *digits, int *point)
{
    int exponent = biased ? (int)biased - 150 : -149;
    uint32_t limbs[MAX_LIMBS] = {biased ? mantissa | 0x800000u : mantissa};
    int count = 1, scale = 0; /* value = limbs / 10^scale */
    for (; exponent >= 5; exponent -= 5)
        times(limbs, &count, 32u);
    if (exponent > 0)
        times(limbs, &count, 1u << exponent);
    for (; exponent <= -2; exponent += 2, scale += 2) /* 2^-2 = 25 / 100 */
        times(limbs, &count, 25u);
    if (exponent == -1) {
        times(limbs, &count, 5u);
        scale += 1;
    }
    int length = 0;
    for (int i = count - 1; i >= 0; --i, length += 8)
        for (int d = 7; d >= 0; --d, limbs[i] /= 10u)
            digits[length + d] = (char)('0' + limbs[i] % 10u);
    int first = 0;
    while (digits[first] == '0')
        ++first;
    memmove(digits, digits + first, (size_t)(length - first));
    *point = length - first - scale;
    return length - first;
}

/* Rounds digits[0..length) to DIGITS digits, half to even; returns the number kept (a carry out of the
 * first digit moves the point). */
static int round_digits(char *digits, int length, int *point)
{
    if (length <= DIGITS)
        return length;
    int rest = 0;
    for (int i = DIGITS + 1; i < length; ++i)
        rest |= digits[i] != '0';
    char next = digits[DIGITS];
    if (next > '5' || (next == '5' && (rest || ((digits[DIGITS - 1] - '0') & 1)))) {
        int i = DIGITS - 1;
        while (i >= 0 && digits[i] == '9')
            digits[i--] = '0';
        if (i < 0) {
            digits[0] = '1';
            *point += 1;
        } else {
            digits[i] += 1;
        }
    }
    return DIGITS;
}

void rt_print_float(float value)
{
    uint32_t word;
    memcpy(&word, &value, sizeof word);
    uint32_t biased = (word >> 23) & 0xffu, mantissa = word & 0x7fffffu;
    if (word >> 31)
        rt_putc('-');
    if (biased == 0xffu) {
        rt_puts(mantissa ? "nan" : "inf");
        return;
    }
    if (biased == 0 && mantissa == 0) {
        rt_puts("0.0");
        return;
    }
    char digits[8 * MAX_LIMBS];
    int point;
    int length = round_digits(digits, expand(biased, mantissa, digits, &point), &point);
    while (length > 1 && digits[length - 1] == '0')
        --length;
    int lead = point - 1; /* the power of ten of the first digit */
    if (lead < -4 || lead >= DIGITS) {
        rt_putc(digits[0]);
        if (length > 1)
            rt_putc('.');
        for (int i = 1; i < length; ++i)
            rt_putc(digits[i]);
        rt_putc('e');
        rt_putc(lead < 0 ? '-' : '+');
        int magnitude = lead < 0 ? -lead : lead;
        if (magnitude < 10)
            rt_putc('0');
        rt_print_int(magnitude);
    } else if (lead < 0) {
        rt_puts("0.");
        for (int i = lead + 1; i < 0; ++i)
            rt_putc('0');
        for (int i = 0; i < length; ++i)
            rt_putc(digits[i]);
    } else {
        for (int i = 0; i <= lead; ++i)
            rt_putc(i < length ? digits[i] : '0');
        rt_putc('.');
        if (length <= lead + 1)
            rt_putc('0');
        for (int i = lead + 1; i < length; ++i)
            rt_putc(digits[i]);
    }
}
