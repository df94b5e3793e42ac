// The CLIP text encoder at the full SD 1.x size (hidden 768, 12 layers) against transformers.
// Labelled slow.
#include <gtest/gtest.h>

#include "test_paths.h"
#include "text_encoder_parity.h"

TEST(ClipTextModelFull, MatchesReference) {
    sds::test::check_text_encoder_parity(sds::test::fixture_dir("text_encoder_full"), {0, 1});
}
