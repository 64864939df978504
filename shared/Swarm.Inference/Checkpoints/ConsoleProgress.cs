using System.Globalization;

namespace Swarm.Checkpoints;

/// <summary>
/// A byte-count progress display for long writes. On a terminal it redraws one line
/// (<c>label [#####.....]  42.0%  512.0 / 1219.4 MB  210.5 MB/s</c>) at most every 100 ms;
/// when the output is redirected (logs, CI) it prints a plain line every 10 % instead.
/// The final report (done == total) always prints and ends the line.
/// </summary>
/// <remarks>Report is expected on one thread at a time (the writer's).</remarks>
public sealed class ConsoleProgress : IProgress<(long done, long total)>
{
    private static readonly TimeSpan RedrawInterval = TimeSpan.FromMilliseconds(100);
    private const int BarWidth = 30;

    private readonly string _label;
    private readonly TextWriter _output;
    private readonly bool _interactive;
    private readonly TimeProvider _time;
    private long _start = -1;
    private long _lastDraw = -1;
    private int _lastDecile = -1;
    private bool _finished;

    /// <param name="label">Shown first on each line, e.g. the file or model name.</param>
    /// <param name="output">Where to draw; default <see cref="Console.Error"/>.</param>
    /// <param name="interactive">Redraw in place? Default: true when stderr is a terminal.</param>
    /// <param name="time">Clock for rate and throttling; default <see cref="TimeProvider.System"/>.</param>
    public ConsoleProgress(string label, TextWriter? output = null, bool? interactive = null, TimeProvider? time = null)
    {
        _label = label;
        _output = output ?? Console.Error;
        _interactive = interactive ?? (output is null && !Console.IsErrorRedirected);
        _time = time ?? TimeProvider.System;
    }

    public void Report((long done, long total) value)
    {
        var (done, total) = value;
        long now = _time.GetTimestamp();
        if (_start < 0) _start = now;
        if (_finished) return;
        bool final = total > 0 && done >= total;
        double fraction = total > 0 ? Math.Clamp(done / (double)total, 0, 1) : 0;

        if (_interactive)
        {
            if (!final && _lastDraw >= 0 && _time.GetElapsedTime(_lastDraw, now) < RedrawInterval) return;
            _lastDraw = now;
            int filled = (int)(fraction * BarWidth);
            string bar = new string('#', filled) + new string('.', BarWidth - filled);
            _output.Write($"\r{_label} [{bar}] {Line(done, total, fraction, now)}");
            if (final) _output.WriteLine();
        }
        else
        {
            int decile = (int)(fraction * 10);
            if (!final && decile <= _lastDecile) return;
            _lastDecile = decile;
            _output.WriteLine($"{_label}: {Line(done, total, fraction, now)}");
        }
        _output.Flush();
        _finished = final;
    }

    private string Line(long done, long total, double fraction, long now)
    {
        double seconds = _time.GetElapsedTime(_start, now).TotalSeconds;
        string rate = seconds > 0 ? $"{done / 1e6 / seconds:F1} MB/s" : "- MB/s";
        return string.Create(CultureInfo.InvariantCulture,
            $"{fraction * 100,5:F1}%  {done / 1e6:F1} / {total / 1e6:F1} MB  {rate}");
    }
}
