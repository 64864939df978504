using System.Buffers.Binary;
using System.IO.Compression;

namespace Swarm.Tests.Ops;

/// <summary>Minimal PNG reader (8-bit RGB/RGBA, non-interlaced — what Chromium writes), enough to check a screenshot's pixels.</summary>
public sealed class PngImage
{
    private readonly byte[] _pixels;
    private readonly int _channels;

    private PngImage(int width, int height, int channels, byte[] pixels)
    {
        Width = width; Height = height; _channels = channels; _pixels = pixels;
    }

    /// <summary>Width in pixels.</summary>
    public int Width { get; }

    /// <summary>Height in pixels.</summary>
    public int Height { get; }

    /// <summary>The colour at (x, y).</summary>
    public (byte R, byte G, byte B) this[int x, int y]
    {
        get
        {
            int i = (y * Width + x) * _channels;
            return (_pixels[i], _pixels[i + 1], _pixels[i + 2]);
        }
    }

    /// <summary>Pixels whose every channel is within <paramref name="tolerance"/> of <paramref name="rgb"/> (e.g. 0xe5484d).</summary>
    public int CountNear(int rgb, int tolerance = 6)
    {
        int r = (rgb >> 16) & 0xff, g = (rgb >> 8) & 0xff, b = rgb & 0xff, n = 0;
        for (int i = 0; i < _pixels.Length; i += _channels)
            if (Math.Abs(_pixels[i] - r) <= tolerance && Math.Abs(_pixels[i + 1] - g) <= tolerance && Math.Abs(_pixels[i + 2] - b) <= tolerance)
                n++;
        return n;
    }

    /// <summary>Decodes a PNG file.</summary>
    /// <exception cref="InvalidDataException">Not a PNG, or a kind this reader does not handle.</exception>
    public static PngImage Load(string path)
    {
        byte[] data = File.ReadAllBytes(path);
        ReadOnlySpan<byte> signature = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];
        if (data.Length < 8 || !data.AsSpan(0, 8).SequenceEqual(signature))
            throw new InvalidDataException($"{path} is not a PNG file");
        int width = 0, height = 0, channels = 0;
        using var idat = new MemoryStream();
        int pos = 8;
        while (pos + 8 <= data.Length)
        {
            int length = BinaryPrimitives.ReadInt32BigEndian(data.AsSpan(pos));
            string type = System.Text.Encoding.ASCII.GetString(data, pos + 4, 4);
            var body = data.AsSpan(pos + 8, length);
            if (type == "IHDR")
            {
                width = BinaryPrimitives.ReadInt32BigEndian(body);
                height = BinaryPrimitives.ReadInt32BigEndian(body[4..]);
                byte depth = body[8], colorType = body[9], interlace = body[12];
                if (depth != 8 || interlace != 0 || colorType is not (2 or 6))
                    throw new InvalidDataException($"{path}: unsupported PNG (bit depth {depth}, colour type {colorType}, interlace {interlace})");
                channels = colorType == 6 ? 4 : 3;
            }
            else if (type == "IDAT") idat.Write(body);
            else if (type == "IEND") break;
            pos += 12 + length;
        }
        if (channels == 0) throw new InvalidDataException($"{path}: no IHDR chunk");
        idat.Position = 0;
        using var z = new ZLibStream(idat, CompressionMode.Decompress);
        int stride = width * channels;
        var raw = new byte[(stride + 1) * height];
        z.ReadExactly(raw);
        var pixels = new byte[stride * height];
        for (int y = 0; y < height; y++)
        {
            byte filter = raw[y * (stride + 1)];
            var line = raw.AsSpan(y * (stride + 1) + 1, stride);
            var outLine = pixels.AsSpan(y * stride, stride);
            var prev = y > 0 ? pixels.AsSpan((y - 1) * stride, stride) : new byte[stride];
            for (int i = 0; i < stride; i++)
            {
                int a = i >= channels ? outLine[i - channels] : 0, b = prev[i], c = i >= channels ? prev[i - channels] : 0;
                int predictor = filter switch
                {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => (a + b) / 2,
                    4 => Paeth(a, b, c),
                    _ => throw new InvalidDataException($"{path}: bad filter type {filter} on row {y}"),
                };
                outLine[i] = (byte)(line[i] + predictor);
            }
        }
        return new PngImage(width, height, channels, pixels);
    }

    private static int Paeth(int a, int b, int c)
    {
        int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
        return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
    }
}
