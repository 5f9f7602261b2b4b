// Differential Diffusion: hover hints for the panel's controls, in the WebUI's own way
// (its hints.js reads the global `titles` table by label text).
(function() {
    const differentialDiffusionTitles = {
        "Change map (white = change, black = keep)": "Grayscale map: each pixel changes like img2img at (map value x denoising strength). It gets the same resize/crop as the init image.",
        "Map source": "Use the uploaded map; the inpaint mask (after its blur) as the change amounts (soft inpainting); or a strength fan: regions from strength at black to strength at white, side by side in one generation.",
        "Fan regions": "How many regions the fan has: region #1 gets the strength at black, the last the strength at white, evenly spaced between.",
        "Fan layout": "Vertical bands (left to right), horizontal bands (top to bottom) or radial sectors (clockwise from 12 o'clock).",
        "Region to apply (#)": "The region number written on the labelled copy of a fan result.",
        "Apply region's strength": "Sets the img2img denoising strength to the chosen region's and turns Differential Diffusion off: plain img2img at that strength.",
        "Invert map (white = keep)": "Flip the map: white keeps the input, black changes fully (the paper's own maps are drawn this way).",
        "Gamma": "map ** gamma: above 1 weakens mid-grays, below 1 strengthens them.",
        "Blur radius (px)": "Gaussian blur of the map, standard deviation in output pixels: softer transitions.",
        "Strength at black": "Strength given to black: strength = low + (high - low) x map.",
        "Strength at white": "Strength given to white: strength = low + (high - low) x map.",
        "Preserve unchanged pixels": "Where the strength is 0, output the input pixels exactly instead of a VAE round trip.",
    };
    if (typeof titles === "object" && titles !== null) {
        Object.assign(titles, differentialDiffusionTitles);
    }
})();
