// The full SD 1.5 UNet (32x32 latents) and VAE (64x64 pixels) against diffusers. Labelled slow.
#include <gtest/gtest.h>

#include "nn_parity.h"
#include "test_paths.h"

TEST(UNetFull, MatchesDiffusers) {
    sds::test::check_unet(sds::test::fixture_dir("unet_vae_full"), "unet", {""});
}

TEST(VaeFull, MatchesDiffusers) {
    sds::test::check_vae(sds::test::fixture_dir("unet_vae_full"));
}
